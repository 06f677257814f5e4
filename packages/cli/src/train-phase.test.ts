import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { configHash, parseConfig, type RunConfig } from '@svd-train/core';
import { buildResNetForConfig, buildTeacherForConfig, getParameters } from '@svd-train/layers';
import { checkpointOf as writeCheckpoint } from './test-support/checkpoints.js';
import { loadTeacher } from './train-phase.js';

const tmp = mkdtempSync(join(tmpdir(), 'svd-teacher-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const checkpointOf = (cfg: RunConfig, name: string, e = 0): string => writeCheckpoint(tmp, cfg, name, e);

describe('loadTeacher', () => {
  const student = parseConfig({ model: 'resnet20', decomposition: 'channel', distillAlpha: 0.5, teacher: '/t.svdckpt' });
  const lines: string[] = [];
  const io = { out: (s: string) => void lines.push(s), err: (s: string) => void lines.push(s) };

  it('takes a teacher of the run\'s own architecture without teacherArch, so such configs keep their hash', () => {
    const path = checkpointOf({ ...student, distillAlpha: 0, teacher: null }, 'same');
    const { cfg } = loadTeacher({ ...student, teacher: path }, io);
    expect(cfg.teacherArch).toBeNull();
    expect(cfg.teacherRanks).toBeNull();
    expect(configHash(cfg)).toBe(configHash({ ...student, teacher: path }));
  });

  it('fills teacherArch (and teacherRanks) from a spatial, a plain or a pruned deeper teacher\'s own config, and the teacher model fits its tensors', () => {
    const cases: [string, Partial<RunConfig>, number, RunConfig['teacherArch']][] = [
      ['spatial', { decomposition: 'spatial' }, 0, { model: 'resnet20', svd: true, decomposition: 'spatial' }],
      ['plain', { svd: false }, 0, { model: 'resnet20', svd: false, decomposition: 'channel' }],
      ['resnet32-pruned', { model: 'resnet32' }, 0.05, { model: 'resnet32', svd: true, decomposition: 'channel' }],
    ];
    for (const [name, arch, e, want] of cases) {
      const path = checkpointOf({ ...student, ...arch, distillAlpha: 0, teacher: null }, name, e);
      lines.length = 0;
      const { cfg, teacher } = loadTeacher({ ...student, teacher: path }, io);
      expect(cfg.teacherArch, name).toEqual(want);
      expect(cfg.teacherRanks === null, name).toBe(e === 0);
      expect(lines.join('')).toContain(want!.svd ? `SVD ${want!.decomposition}` : 'plain (no SVD)');
      // What every worker builds from the config is exactly the checkpoint's tensors.
      const m = buildTeacherForConfig(cfg);
      expect(getParameters(m).map((p) => `${p.name}:${p.shape.join('x')}`), name).toEqual(teacher.params.map((p) => `${p.name}:${p.shape.join('x')}`));
      m.dispose();
      // The run's hash now says which teacher architecture it learns from.
      expect(configHash(cfg)).not.toBe(configHash({ ...cfg, teacherArch: null }));
    }
  });

  it('loads an ensemble: each of extraTeachers gets its own architecture and ranks, and its weights come back in order', () => {
    const same = checkpointOf({ ...student, distillAlpha: 0, teacher: null }, 'ens-same');
    const spatial = checkpointOf({ ...student, decomposition: 'spatial', distillAlpha: 0, teacher: null }, 'ens-spatial');
    const pruned = checkpointOf({ ...student, distillAlpha: 0, teacher: null }, 'ens-pruned', 0.05);
    lines.length = 0;
    const two = { teacherRanks: null, teacherArch: null };
    const { cfg, teacher, extraTeachers } = loadTeacher({ ...student, teacher: same, extraTeachers: [{ teacher: spatial, ...two }, { teacher: pruned, ...two }] }, io);
    expect([cfg.teacher, cfg.teacherArch, cfg.teacherRanks]).toEqual([same, null, null]);
    expect(cfg.extraTeachers.map((t) => [t.teacher, t.teacherArch?.decomposition ?? null, t.teacherRanks === null])).toEqual([
      [spatial, 'spatial', true],
      [pruned, null, false],
    ]);
    expect(lines.join('')).toContain('against the mean softened output of 3 teachers');
    for (const [k, t] of cfg.extraTeachers.entries()) {
      const m = buildTeacherForConfig({ ...cfg, ...t });
      expect(getParameters(m).map((p) => `${p.name}:${p.shape.join('x')}`)).toEqual(extraTeachers[k]!.params.map((p) => `${p.name}:${p.shape.join('x')}`));
      m.dispose();
    }
    expect(teacher.params.length).toBeGreaterThan(0);
    // Each teacher's file is checked as the first one is.
    expect(() => loadTeacher({ ...student, teacher: same, extraTeachers: [{ teacher: join(tmp, 'missing.svdckpt'), ...two }] }, io)).toThrow(/missing\.svdckpt/);
  });

  it('refuses a config whose teacherArch is not the checkpoint\'s, naming both', () => {
    const path = checkpointOf({ ...student, decomposition: 'spatial', distillAlpha: 0, teacher: null }, 'mismatch');
    expect(() => loadTeacher({ ...student, teacher: path, teacherArch: { model: 'resnet20', svd: false, decomposition: 'channel' } }, io)).toThrow(
      /is a resnet20 SVD spatial checkpoint, but the config's teacherArch says resnet20 plain \(no SVD\)\. Fix: drop teacherArch/,
    );
  });
});
