import type { RunConfig } from './schema.js';

/** A model's architecture in words, for logs and messages: 'resnet20 SVD channel', 'resnet32 plain (no SVD)'. */
export function archLabel(a: Pick<RunConfig, 'model' | 'svd' | 'decomposition'>): string {
  return `${a.model} ${a.svd ? `SVD ${a.decomposition}` : 'plain (no SVD)'}`;
}
