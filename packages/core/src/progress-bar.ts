/**
 * Progress reporting for long operations (the dataset download, epochs in the CLI).
 *
 * On a terminal it redraws one line in place (bar, amount, rate, ETA); anywhere else (CI logs,
 * files, pipes) carriage returns would make a mess, so it prints a plain line every
 * `intervalMs` instead, plus a final one.
 */

/** Where the bar writes; `isTTY` and `columns` are read when present (process.stderr has both). */
export interface ProgressStream {
  write(chunk: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

export interface ProgressBarOptions {
  /** Text before the bar, e.g. 'cifar-10-binary.tar.gz'. */
  label?: string;
  /** Amount at completion; null or undefined when unknown (no percentage or ETA then). */
  total?: number | null;
  /** 'bytes' formats amounts as KiB/MiB/GiB; any other string is printed after plain numbers. */
  unit?: string;
  /** Default process.stderr, so progress never mixes with data written to stdout. */
  stream?: ProgressStream;
  /** Force terminal mode on or off; default `stream.isTTY`. */
  tty?: boolean;
  /** Plain mode: least time between two lines (default 5000 ms). */
  intervalMs?: number;
  /** TTY mode: least time between two redraws (default 100 ms). */
  redrawMs?: number;
  /** Clock in ms, injectable for tests. */
  now?: () => number;
}

/** 1536 -> '1.5 KiB'. */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (Math.abs(v) >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${Math.round(v)} B` : `${v.toFixed(1)} ${units[u]}`;
}

/** Seconds as m:ss or h:mm:ss; '?' when unknown or infinite. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

export class ProgressBar {
  private readonly label: string;
  private readonly total: number | null;
  private readonly unit: string;
  private readonly stream: ProgressStream;
  private readonly tty: boolean;
  private readonly intervalMs: number;
  private readonly redrawMs: number;
  private readonly now: () => number;
  private readonly start: number;
  private current = 0;
  private note = '';
  private lastDraw = -Infinity;
  private finished = false;

  constructor(opts: ProgressBarOptions = {}) {
    this.label = opts.label ?? '';
    this.total = opts.total != null && opts.total > 0 ? opts.total : null;
    this.unit = opts.unit ?? '';
    this.stream = opts.stream ?? process.stderr;
    this.tty = opts.tty ?? Boolean(this.stream.isTTY);
    this.intervalMs = opts.intervalMs ?? 5000;
    this.redrawMs = opts.redrawMs ?? 100;
    this.now = opts.now ?? Date.now;
    this.start = this.now();
  }

  /** Sets the amount done so far (and an optional note such as the loss), redrawing if due. */
  update(current: number, note?: string): void {
    if (this.finished) return;
    this.current = current;
    if (note !== undefined) this.note = note;
    const t = this.now();
    if (t - this.lastDraw >= (this.tty ? this.redrawMs : this.intervalMs)) this.draw(t, false);
  }

  /** Adds `delta` to the amount done. */
  tick(delta = 1, note?: string): void {
    this.update(this.current + delta, note);
  }

  /** Draws the final state and ends the line; later updates are ignored. */
  done(note?: string): void {
    if (this.finished) return;
    if (note !== undefined) this.note = note;
    this.draw(this.now(), true);
    this.finished = true;
  }

  /** The status text without the bar: amount, percentage, rate, ETA (or elapsed time when done). */
  status(final = false): string {
    const elapsed = Math.max((this.now() - this.start) / 1000, 1e-9);
    const rate = this.current / elapsed;
    const amount = (n: number) => (this.unit === 'bytes' ? formatBytes(n) : `${n}`);
    const suffix = this.unit === 'bytes' || this.unit === '' ? '' : ` ${this.unit}`;
    const parts: string[] = [];
    if (this.total !== null) {
      parts.push(`${((100 * this.current) / this.total).toFixed(1).padStart(5)}%`);
      parts.push(`${amount(this.current)}/${amount(this.total)}${suffix}`);
    } else {
      parts.push(`${amount(this.current)}${suffix}`);
    }
    const rateText = this.unit === 'bytes' ? `${formatBytes(rate)}/s` : `${rate.toFixed(rate < 10 ? 2 : 1)}${suffix}/s`;
    parts.push(rateText);
    if (final) parts.push(`in ${formatDuration(elapsed)}`);
    else if (this.total !== null) parts.push(`ETA ${rate > 0 ? formatDuration((this.total - this.current) / rate) : '?'}`);
    if (this.note) parts.push(this.note);
    return parts.join('  ');
  }

  private draw(t: number, final: boolean): void {
    this.lastDraw = t;
    const text = this.status(final);
    const head = this.label ? `${this.label} ` : '';
    if (!this.tty) {
      this.stream.write(`${head}${text}\n`);
      return;
    }
    let bar = '';
    if (this.total !== null) {
      const columns = this.stream.columns ?? 80;
      const width = Math.max(10, Math.min(40, columns - head.length - text.length - 4));
      const filled = Math.min(width, Math.round((width * this.current) / this.total));
      bar = `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}] `;
    }
    // \r + erase-line redraws in place; the newline only once, at the end.
    this.stream.write(`\r\x1b[K${head}${bar}${text}${final ? '\n' : ''}`);
  }
}
