/** Measured GPU time of a backend call, for self-hosted costs and utilization. */

/** GPU time a backend reports for one call, else the call's wall time; a pooled batch's share for this job's images. */
export function measuredGpuMs(providerMetadata: Record<string, unknown> | undefined, wallMs: number, images: number): { ms: number; host?: string } {
  const md = providerMetadata ?? {};
  const timings = md.timings as { runMs?: unknown } | undefined;
  let ms = typeof md.gpuMs === 'number' ? md.gpuMs : typeof timings?.runMs === 'number' ? timings.runMs : wallMs;
  const batch = md.batch as { size?: unknown } | undefined;
  // gpuMs of a pooled batch covers every image of the batch; this job pays for its own.
  if (typeof md.gpuMs === 'number' && typeof batch?.size === 'number' && batch.size > images && images > 0) ms = (ms * images) / batch.size;
  return { ms: Math.max(0, ms), host: typeof md.host === 'string' ? md.host : undefined };
}
