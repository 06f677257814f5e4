import { describe, expect, it } from 'vitest';
import { ProgressBar, formatBytes, formatDuration } from './progress-bar.js';

function fakeStream(isTTY: boolean) {
  const writes: string[] = [];
  return { writes, stream: { isTTY, columns: 100, write: (s: string) => writes.push(s) } };
}

describe('formatting', () => {
  it('formats bytes and durations', () => {
    expect(formatBytes(512)).toBe('512 B');
    expect(formatBytes(1536)).toBe('1.5 KiB');
    expect(formatBytes(170 * 1024 * 1024)).toBe('170.0 MiB');
    expect(formatDuration(5)).toBe('0:05');
    expect(formatDuration(125)).toBe('2:05');
    expect(formatDuration(3725)).toBe('1:02:05');
    expect(formatDuration(Infinity)).toBe('?');
  });
});

describe('ProgressBar on a TTY', () => {
  it('redraws in place with bar, amount, rate and ETA, throttled, and ends the line', () => {
    let t = 0;
    const { writes, stream } = fakeStream(true);
    const bar = new ProgressBar({ label: 'dl', total: 4 * 1024 * 1024, unit: 'bytes', stream, now: () => t });
    t = 1000;
    bar.update(1024 * 1024);
    expect(writes).toHaveLength(1);
    expect(writes[0]).toMatch(/^\r\x1b\[Kdl \[#+-+\]  25\.0%  1\.0 MiB\/4\.0 MiB  1\.0 MiB\/s  ETA 0:03$/);
    t = 1050; // within the redraw interval: no redraw
    bar.update(2 * 1024 * 1024);
    expect(writes).toHaveLength(1);
    t = 2000;
    bar.done();
    expect(writes).toHaveLength(2);
    expect(writes[1]).toContain(' 50.0%');
    expect(writes[1]).toContain('in 0:02');
    expect(writes[1]!.endsWith('\n')).toBe(true);
    bar.update(3);
    expect(writes).toHaveLength(2);
  });
});

describe('ProgressBar off a TTY', () => {
  it('prints plain lines at most every intervalMs, without control characters', () => {
    let t = 0;
    const { writes, stream } = fakeStream(false);
    const bar = new ProgressBar({ label: 'train', total: 100, unit: 'steps', stream, now: () => t, intervalMs: 1000 });
    for (let i = 1; i <= 100; i++) {
      t = i * 100;
      bar.update(i, `loss ${(1 / i).toFixed(3)}`);
    }
    bar.done();
    // First update draws, then one line per second of 10 s, then the final line.
    expect(writes.length).toBe(11);
    expect(writes.every((w) => w.endsWith('\n') && !w.includes('\r') && !w.includes('\x1b'))).toBe(true);
    expect(writes[0]).toBe('train   1.0%  1/100 steps  10.0 steps/s  ETA 0:10  loss 1.000\n');
    expect(writes[10]).toContain('100/100 steps');
    expect(writes[10]).toContain('loss 0.010');
  });

  it('shows no percentage or ETA when the total is unknown', () => {
    let t = 0;
    const { writes, stream } = fakeStream(false);
    const bar = new ProgressBar({ total: null, unit: 'bytes', stream, now: () => t });
    t = 2000;
    bar.update(4096);
    expect(writes[0]).toBe('4.0 KiB  2.0 KiB/s\n');
  });
});
