/**
 * `svd-coord report runs/NAME`: (re)write the run's report.html from its metrics, its latest
 * checkpoint (spectra, MACs) and pipeline.json. `start` calls it at the end of a run.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import { latestCheckpoint, type Checkpoint, type RunConfig } from '@svd-train/core';
import { countMacs, depthOf, plainResNetCost, pruneByEnergy } from '@svd-train/layers';
import { usageError } from '../cli-errors.js';
import type { CliIo, SetExitCode } from '../cli-io.js';
import { modelFromCheckpoint, type Model } from '../checkpoint-model.js';
import type { PipelineSummary } from '../report-pipeline.js';
import { writeReport, type MacsRow } from '../report.js';

/**
 * MACs per image of the plain ResNet of `cfg.model`, the SVD model and its prunes at `energies`, by
 * the run's own MAC weight (`--prune-mac-weight`), as pipeline.json's sweep in the same report.
 */
export function macsAtEnergies(model: Model, cfg: RunConfig, energies: number[]): MacsRow[] {
  const plain = plainResNetCost({ depth: depthOf(cfg.model) });
  const rows: MacsRow[] = [{ label: `plain ${cfg.model}`, macs: plain.macs, params: plain.params }];
  const full = countMacs(model);
  rows.push({ label: cfg.ranks ? 'this model' : 'full rank', macs: full.total, params: full.exportParams });
  for (const e of energies) {
    const pruned = pruneByEnergy(model, e, cfg.pruneMacWeight);
    const c = countMacs(pruned.model);
    rows.push({ label: `pruned e=${e}${cfg.pruneMacWeight > 0 ? `, MAC weight ${cfg.pruneMacWeight}` : ''}`, macs: c.total, params: c.exportParams });
    pruned.model.dispose();
  }
  return rows;
}

export async function reportCommand(runDir: string, io: CliIo): Promise<number> {
  if (!existsSync(runDir)) throw usageError(`Run folder ${JSON.stringify(runDir)} does not exist. Fix: pass a folder written by \`svd-coord start --out DIR\`.`);
  const notes: string[] = [];
  let params: Checkpoint['params'] | undefined;
  let macs: MacsRow[] | undefined;
  try {
    const latest = latestCheckpoint(join(runDir, 'checkpoints'));
    if (latest) {
      const { ckpt, model, cfg } = await modelFromCheckpoint(latest.path);
      params = ckpt.params;
      notes.push(`Spectra and MACs from ${latest.path} (step ${ckpt.step}).`);
      try {
        macs = macsAtEnergies(model, cfg, [0.01, 0.05]);
      } catch (e) {
        notes.push(`MACs not computed: ${(e as Error).message}`);
      }
      model.dispose();
    } else notes.push('No checkpoint found: no spectra or MACs.');
  } catch (e) {
    notes.push(`Checkpoint not read: ${(e as Error).message}`);
  }
  let pipeline: PipelineSummary | undefined;
  const pipelinePath = join(runDir, 'pipeline.json');
  if (existsSync(pipelinePath)) {
    try {
      pipeline = JSON.parse(readFileSync(pipelinePath, 'utf8')) as PipelineSummary;
    } catch (e) {
      notes.push(`pipeline.json not read: ${(e as Error).message}`);
    }
  }
  const out = writeReport(runDir, { params, macs, pipeline, notes });
  io.out(`report written to ${out}\n`);
  return 0;
}

/** Adds `report` to the `svd-coord` program. */
export function registerReportCommand(program: Command, io: CliIo, setCode: SetExitCode): void {
  program
    .command('report')
    .description('write runs/NAME/report.html: curves, regularizers, spectra, MACs, the pruning pipeline')
    .argument('<run>', 'run folder, e.g. runs/latest')
    .action(async (run: string) => setCode(await reportCommand(resolve(run), io)));
}
