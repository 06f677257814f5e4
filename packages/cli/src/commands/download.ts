/** `svd-coord download`: fetch CIFAR-10 from the official URL, md5-checked, atomically. */
import type { Command } from 'commander';
import { downloadCifar10, resolveDataDir } from '@svd-train/core';
import type { CliIo, SetExitCode } from '../cli-io.js';

/** Adds `download` to the `svd-coord` program. */
export function registerDownloadCommand(program: Command, io: CliIo, setCode: SetExitCode): void {
  program
    .command('download')
    .description('download CIFAR-10 (binary version, md5-checked)')
    .option('--dir <dir>', 'destination (default: the cache folder, or SVD_TRAIN_DATA)')
    .action(async (o: { dir?: string }) => {
      const dir = o.dir ?? resolveDataDir({ flag: null }).dir;
      await downloadCifar10(dir, {});
      io.out(`CIFAR-10 ready in ${dir}\n`);
      setCode(0);
    });
}
