/**
 * Command-line flag text → typed config values. Commander hands every training option over as the
 * string typed; this converts each by the kind of its field ("0.1" → 0.1, "false" → false,
 * "81,122" → [81, 122], "none" → null, "fc=4,stem.0=2" → { fc: 4, 'stem.0': 2 }) before core's
 * `resolveConfig` merges and validates them. Text that does not parse is passed on unchanged, so
 * the schema's error shows the value exactly as the user typed it, with the flag it came from.
 */
import { DEFAULTS } from '@svd-train/core';

type FieldKind = 'number' | 'boolean' | 'numbers' | 'number|null' | 'ranks' | 'string';

/** Fields whose default is null but whose values are numbers. */
const NULLABLE_NUMBERS = new Set(['limitTrain', 'limitTest', 'pruneEnergy', 'pruneMacs', 'finetuneLr', 'plainLr', 'finetuneLambdaO', 'finetuneWeightDecay']);

function fieldKind(key: string): FieldKind {
  if (NULLABLE_NUMBERS.has(key)) return 'number|null';
  if (key === 'ranks') return 'ranks';
  const d: unknown = (DEFAULTS as Record<string, unknown>)[key];
  if (typeof d === 'number') return 'number';
  if (typeof d === 'boolean') return 'boolean';
  if (Array.isArray(d)) return 'numbers';
  return 'string';
}

function toNumber(s: string): number | undefined {
  const t = s.trim();
  if (t === '') return undefined;
  const n = Number(t);
  return Number.isNaN(n) ? undefined : n;
}

/**
 * `--ranks` text: 'none'/'null', a JSON object ('{"fc": 5}') or 'module=rank' pairs separated by
 * commas ('stem.0=3,layers.0.conv1=4'). Undefined when it is none of these.
 */
function parseRanks(v: string): Record<string, number> | null | undefined {
  const t = v.trim();
  if (/^(null|none)$/i.test(t)) return null;
  if (t.startsWith('{')) {
    try {
      const o: unknown = JSON.parse(t);
      return o !== null && typeof o === 'object' && !Array.isArray(o) ? (o as Record<string, number>) : undefined;
    } catch {
      return undefined;
    }
  }
  const out: Record<string, number> = {};
  for (const part of t.split(',')) {
    const m = /^\s*([^=\s]+)\s*=\s*(\S+)\s*$/.exec(part);
    const n = m ? toNumber(m[2]) : undefined;
    if (!m || n === undefined) return undefined;
    out[m[1]] = n;
  }
  return out;
}

function coerce(kind: FieldKind, v: string): unknown {
  const t = v.trim();
  switch (kind) {
    case 'number':
      return toNumber(v) ?? v;
    case 'number|null':
      return /^(null|none)$/i.test(t) ? null : (toNumber(v) ?? v);
    case 'boolean':
      if (/^(true|1|yes)$/i.test(t)) return true;
      if (/^(false|0|no)$/i.test(t)) return false;
      return v;
    case 'ranks': {
      const parsed = parseRanks(v);
      return parsed === undefined ? v : parsed;
    }
    case 'numbers': {
      if (t === '' || /^\[\s*\]$/.test(t)) return [];
      const nums = t.replace(/^\[|\]$/g, '').split(',').map(toNumber);
      return nums.every((n) => n !== undefined) ? nums : v;
    }
    case 'string':
      return v;
  }
}

/**
 * Converts the string values of `flags` by field kind. Keys are camelCase, as commander gives them;
 * other values and unknown keys pass through for `resolveConfig` to check and report.
 */
export function coerceFlagValues(flags: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(flags)) {
    out[key] = typeof v === 'string' ? coerce(fieldKind(key), v) : v;
  }
  return out;
}
