/** `svd-coord download`: fetch CIFAR-10 from the official URL, md5-checked, atomically. */
import type { Command } from 'commander';
import { downloadCifar10, selectDataDir } from '@svd-train/core';
import type { CliIo, SetExitCode } from '../cli-io.js';

/** Adds `download` to the `svd-coord` program. */
export function registerDownloadCommand(program: Command, io: CliIo, setCode: SetExitCode): void {
  program
    .command('download')
    .description('download CIFAR-10 (binary version, md5-checked)')
    .option('--dir <dir>', 'destination (default: the cache folder, or SVD_TRAIN_DATA)')
    .action(async (o: { dir?: string }) => {
      // The folder it goes to, not one that must already hold it (resolveDataDir refuses a missing
      // data set, which is the case this command is for).
      const dir = o.dir ?? selectDataDir({ env: process.env }).dir;
      const result = await downloadCifar10(dir, {});
      io.out(result.downloaded ? `CIFAR-10 downloaded (md5-checked) to ${result.dir}\n` : `CIFAR-10 is already in ${result.dir} (md5-checked)\n`);
      setCode(0);
    });
}
