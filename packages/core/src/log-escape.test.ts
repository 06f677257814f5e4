import { describe, expect, it } from 'vitest';
import { escapeForLog } from './log-escape.js';

describe('escapeForLog', () => {
  it('makes newlines, ANSI escapes and bidi overrides visible, so a peer cannot forge log lines', () => {
    expect(escapeForLog('w1\nworker evil joined\r\x1b[2K')).toBe('w1\\x0aworker evil joined\\x0d\\x1b[2K');
    expect(escapeForLog('a\u202eb\u2028c\x7f\x85')).toBe('a\\u202eb\\u2028c\\x7f\\x85');
  });
  it('keeps ordinary text, cuts long text and says how long it was', () => {
    expect(escapeForLog('gpu-box-3:1234 ünïcode')).toBe('gpu-box-3:1234 ünïcode');
    expect(escapeForLog('x'.repeat(300), 10)).toBe(`${'x'.repeat(10)}… (300 chars)`);
  });
});
