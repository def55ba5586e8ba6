/** Files under `dir` (TypeScript sources), relative and sorted. */
export function sourceFiles(dir: string, prefix?: string): string[];
/** What lib/ was compiled from: each source file's name, size and modification time. */
export function libStamp(dir: string): string;
