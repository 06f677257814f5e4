/**
 * Replacing a small file whole: readers (and a process killed mid-write) see the old content or the
 * new, never a torn file. For run files such as pipeline.json and a trimmed metrics.jsonl;
 * checkpoints have their own, fsynced, save (checkpoint.ts).
 */
import { renameSync, writeFileSync } from 'node:fs';

/** Writes `data` to `path` through a temp file beside it (same directory, so same file system) and a rename. */
export function replaceFile(path: string, data: string): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, data);
  renameSync(tmp, path);
}
