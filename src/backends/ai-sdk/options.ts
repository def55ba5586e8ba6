/**
 * Config entry for an `ai-sdk` backend: any provider package of the Vercel AI SDK that has an
 * image model (`@ai-sdk/openai`, `@ai-sdk/fal`, `@ai-sdk/replicate`, `@ai-sdk/black-forest-labs`,
 * `@ai-sdk/luma`, `@ai-sdk/togetherai`, …), driven through `generateImage`. The package must be
 * installed next to easel. Such calls are synchronous to easel: no provider job handle is kept, so
 * use the dedicated backends (replicate, fal, bfl) where resuming after a crash matters.
 */
import { z } from 'zod';
import { hostedCommonFields } from '../http/options.ts';
import { declaredOptionsSchema } from '../declared-options.ts';

/** `WxH` */
const sizeText = z.string().regex(/^\d{2,5}x\d{2,5}$/, 'a size such as 1024x1024');
/** A provider's option name for one of easel's own fields (the operator's mapping, so any name goes). */
const optionName = z.string().regex(/^[A-Za-z_][\w-]*$/, 'an option name');

export const aiSdkBackendConfigSchema = z
  .object({
    type: z.literal('ai-sdk'),
    ...hostedCommonFields,
    timeoutSeconds: z.number().positive().max(3600).default(300),
    maxRetries: z.number().int().min(0).max(10).default(2),
    /** The provider package, e.g. `@ai-sdk/openai`. */
    package: z.string().regex(/^(@[a-z0-9][\w.-]*\/)?[a-z0-9][\w.-]*$/i, 'an npm package name'),
    /** The factory export to call (default: the package's `create…` export). */
    factory: z.string().regex(/^[A-Za-z_$][\w$]*$/).optional(),
    /** Settings passed to the factory (`baseURL`, `headers`, …); `apiKey`/`apiKeyEnv` fill `apiKey`. */
    settings: z.record(z.string(), z.unknown()).optional(),
    /** The key under which request provider options are passed (default: the package name in camelCase, e.g. `openai`). */
    providerOptionsKey: z.string().min(1).optional(),
    /** Input images and masks supported (edits go through `generateImage`'s image prompt). */
    edit: z.boolean().default(false),
    /**
     * Where easel's own request fields go in the provider's options, e.g. `{negative_prompt:
     * negativePrompt, steps: numInferenceSteps}` (`@ai-sdk/openai` already maps quality, style,
     * background and user). A field with no entry is ignored with a warning.
     */
    requestFields: z
      .object({
        quality: optionName.optional(),
        style: optionName.optional(),
        negative_prompt: optionName.optional(),
        steps: optionName.optional(),
        guidance_scale: optionName.optional(),
        background: optionName.optional(),
        user: optionName.optional(),
      })
      .strict()
      .optional(),
    /** Provider options requests may set (name → type); anything else is refused. Guarded names cannot be declared. */
    providerOptions: declaredOptionsSchema.optional(),
    /** The sizes the provider's models offer (default: any size easel allows). */
    sizes: z.array(sizeText).min(1).optional(),
  })
  .strict();

export type AiSdkBackendConfig = z.infer<typeof aiSdkBackendConfigSchema>;
export type AiSdkBackendConfigInput = z.input<typeof aiSdkBackendConfigSchema>;
