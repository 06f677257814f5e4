/**
 * Validation of a decoded frame: nothing a peer sends is trusted. The message schemas
 * (messages.ts) check the message type, every field's type and every tensor's length against its
 * shape; then a hand-written scan checks that every gradient value is finite. The first problem
 * becomes a typed SvdTrainError (PROTOCOL_INVALID, PROTOCOL_VERSION, SHAPE_MISMATCH, NON_FINITE)
 * naming the message, the field and the value, never a crash.
 */
import type { z } from 'zod';
import { SvdTrainError } from '../errors.js';
import { assertFinite } from '../tensor.js';
import { MESSAGE_TYPES, MessageSchema, type IssueParams, type Message } from './messages.js';

export interface ValidateOptions {
  /** Skip the per-value finiteness scan of gradients (benchmarks only). */
  skipFiniteCheck?: boolean;
}

function invalid(where: string, what: string): never {
  throw new SvdTrainError('PROTOCOL_INVALID', `${where}: ${what}`);
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (ArrayBuffer.isView(v)) return v.constructor.name;
  return typeof v;
}

/** A number shows its value (NaN, 1.5), anything else its kind. */
function show(v: unknown): string {
  return typeof v === 'number' ? String(v) : describe(v);
}

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !ArrayBuffer.isView(v);
}

function valueAt(raw: unknown, path: readonly PropertyKey[]): unknown {
  let v = raw;
  for (const p of path) v = v !== null && typeof v === 'object' ? (v as Record<PropertyKey, unknown>)[p] : undefined;
  return v;
}

const renderPath = (path: readonly PropertyKey[]): string => path.map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`)).join('');

/**
 * The first issue as an error: `'step' message: field 'lr' is NaN; expected a number`, or for an
 * issue on an array element or a whole object `'weights' message.params[0]: tensor 'a' has …`.
 */
function issueError(type: string, raw: unknown, issue: z.core.$ZodIssue): SvdTrainError {
  const params: IssueParams = (issue.code === 'custom' ? issue.params : undefined) ?? {};
  const code = params.code ?? 'PROTOCOL_INVALID';
  if (params.text) return new SvdTrainError(code, params.text, params.details);
  const path = issue.path;
  const last = path[path.length - 1];
  let text: string;
  if (typeof last === 'string') {
    const where = `'${type}' message${renderPath(path.slice(0, -1))}`;
    const body = params.body ?? `is ${show(valueAt(raw, path))}; expected ${issue.message}`;
    text = `${where}: field '${last}'${body.startsWith('[') ? '' : ' '}${body}`;
  } else {
    const where = `'${type}' message${renderPath(path)}`;
    text = code === 'PROTOCOL_INVALID' && path.length > 0 ? `${where}: is ${show(valueAt(raw, path))}; expected ${issue.message}` : `${where}: ${issue.message}`;
  }
  return new SvdTrainError(code, text, params.details);
}

/** Gradients (and a manifest's initial values) must be finite; weights come from the coordinator's own optimizer. */
function checkFinite(msg: Message): void {
  const scan = (ts: readonly { name: string; data: Float32Array }[], where: string) => {
    for (const t of ts) assertFinite(t.data, t.name, where);
  };
  if (msg.type === 'gradients') {
    scan(msg.grads, `'gradients' message`);
    scan(msg.buffers, `'gradients' message`);
  } else if (msg.type === 'manifest' && msg.initial) {
    scan(msg.initial.params, `'manifest' message.initial`);
    scan(msg.initial.buffers, `'manifest' message.initial`);
  }
}

/**
 * Validates a decoded plain value as a Message; exported for transports that do not use frames.
 * @throws SvdTrainError PROTOCOL_INVALID | PROTOCOL_VERSION | SHAPE_MISMATCH | NON_FINITE
 */
export function validateMessage(raw: unknown, opts: ValidateOptions = {}): Message {
  if (!isObj(raw)) invalid('message', `is ${describe(raw)}; expected an object with a 'type' field`);
  const type = raw.type;
  // Checked before the schema so that an unknown type lists the known ones.
  if (typeof type !== 'string' || !(MESSAGE_TYPES as readonly string[]).includes(type)) {
    invalid('message', `unknown type ${JSON.stringify(type)?.slice(0, 64)}; expected one of ${MESSAGE_TYPES.join(', ')}`);
  }
  const r = MessageSchema.safeParse(raw);
  if (!r.success) throw issueError(type, raw, r.error.issues[0]);
  if (!opts.skipFiniteCheck) checkFinite(r.data);
  return r.data;
}
