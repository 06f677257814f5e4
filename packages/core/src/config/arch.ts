import type { RunConfig } from './schema.js';

/** A model's architecture in words, for logs and messages: 'resnet20 SVD channel', 'resnet32 plain (no SVD)'. */
export function archLabel(a: Pick<RunConfig, 'model' | 'svd' | 'decomposition'>): string {
  return `${a.model} ${a.svd ? `SVD ${a.decomposition}` : 'plain (no SVD)'}`;
}

/** One teacher of a distilling run: its checkpoint, and its ranks and architecture (null: full rank, the run's). */
export type TeacherSpec = RunConfig['extraTeachers'][number];

/** Every teacher a config names, `teacher` first, then `extraTeachers`; empty when it names none. */
export function teachersOf(cfg: Pick<RunConfig, 'teacher' | 'teacherRanks' | 'teacherArch' | 'extraTeachers'>): TeacherSpec[] {
  return cfg.teacher === null ? [] : [{ teacher: cfg.teacher, teacherRanks: cfg.teacherRanks, teacherArch: cfg.teacherArch }, ...cfg.extraTeachers];
}
