export { HANDSHAKE_TIMEOUT_MIN_MS, runWorker, type WorkerOptions, type WorkerResult } from './worker.js';
export { backoffDelay, type BackoffOptions } from './backoff.js';
export { ensureDataset, folderMatches, cacheFolderFor, type FileFetcher } from './data-cache.js';
export { sliceGradients, type SliceGradients } from './chunked-gradients.js';
