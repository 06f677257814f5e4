import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { replaceFile } from './replace-file.js';

const dir = mkdtempSync(join(tmpdir(), 'svd-replace-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('replaceFile', () => {
  it('writes a new file and replaces an old one whole, leaving no temp file', () => {
    const path = join(dir, 'pipeline.json');
    replaceFile(path, '{"a":1}\n');
    expect(readFileSync(path, 'utf8')).toBe('{"a":1}\n');
    writeFileSync(path, 'old content, longer than the new one');
    replaceFile(path, 'new');
    expect(readFileSync(path, 'utf8')).toBe('new');
    expect(readdirSync(dir)).toEqual(['pipeline.json']);
  });
});
