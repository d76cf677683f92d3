// What `qkt --help`, `qkt GROUP` and `qkt CMD --help` print, as text or (under --json) one JSON
// document. Built from the registry's specs only: no command's implementation is loaded for help.
import type { CommandSpec, OptionInfo } from './command.js';

/** Options every command takes (main.ts adds them to each command's). */
export const GLOBAL_OPTIONS: Record<string, OptionInfo> = {
  json: { type: 'boolean', default: false, description: 'print exactly one JSON document on stdout (the result, or {"error": ...}); progress and notes are silent' },
  help: { type: 'boolean', short: 'h', default: false, description: 'show this help (with --json: as a JSON document) and do nothing else' },
};

export interface OptionHelp {
  name: string;
  type: 'string' | 'boolean';
  multiple: boolean;
  required: boolean;
  /** The default in words, or null when there is none (the option is then simply absent). */
  default: string | boolean | null;
  value: string | null;
  description: string;
}

export interface CommandHelp {
  command: string;
  summary: string;
  usage: string;
  options: OptionHelp[];
  positionals: { name: string; description: string } | null;
  examples: string[];
}

export interface ListHelp {
  /** '' for the top level, else the group's words ("kmd"). */
  group: string;
  usage: string;
  commands: Array<{ command: string; summary: string; usage: string }>;
}

const name = (c: CommandSpec): string => c.path.join(' ');

/** The commands under a group's words (all of them for []), or none when the words name no group. */
export function groupMembers(commands: readonly CommandSpec[], words: readonly string[]): CommandSpec[] {
  return commands.filter((c) => c.path.length > words.length && words.every((w, i) => c.path[i] === w));
}

export function commandHelp(c: CommandSpec): CommandHelp {
  const required = new Set(c.required ?? []);
  const options = Object.entries({ ...c.options, ...GLOBAL_OPTIONS }).map(([n, o]): OptionHelp => ({
    name: n,
    type: o.type,
    multiple: o.multiple === true,
    required: required.has(n),
    // A boolean flag's `false` is its absence: not worth a "(default: false)" on every line.
    default: o.defaultText ?? (o.type === 'string' && o.default !== undefined ? o.default : null),
    value: o.type === 'string' ? (o.value ?? 'VALUE') : null,
    description: o.description,
  }));
  return { command: name(c), summary: c.summary, usage: c.usage, options, positionals: c.positionals ?? null, examples: [...c.examples] };
}

export function formatCommandHelp(h: CommandHelp): string {
  const left = (o: OptionHelp) => `${o.name === 'help' ? '-h, ' : ''}--${o.name}${o.value ? ` ${o.value}` : ''}`;
  const width = Math.min(28, Math.max(...h.options.map((o) => left(o).length)));
  const optionLines = h.options.map((o) => {
    const notes = [o.required ? 'required' : '', o.multiple ? 'repeatable' : '', o.default !== null ? `default: ${String(o.default)}` : ''].filter(Boolean);
    const text = `${o.description}${notes.length ? ` (${notes.join('; ')})` : ''}`;
    const l = left(o);
    return l.length > width ? `  ${l}\n  ${''.padEnd(width)}  ${text}` : `  ${l.padEnd(width)}  ${text}`;
  });
  return [
    `qkt ${h.command}: ${h.summary}`,
    '',
    `Usage: ${h.usage}`,
    ...(h.positionals ? ['', `Arguments:\n  ${h.positionals.name}  ${h.positionals.description}`] : []),
    '',
    'Options:',
    ...optionLines,
    '',
    'Examples:',
    ...h.examples.map((e) => `  ${e}`),
  ].join('\n');
}

export function listHelp(commands: readonly CommandSpec[], words: readonly string[]): ListHelp {
  const group = words.join(' ');
  return {
    group,
    usage: group ? `qkt ${group} <command> [options]` : 'qkt <command> [options]',
    commands: groupMembers(commands, words).map((c) => ({ command: name(c), summary: c.summary, usage: c.usage })),
  };
}

export function formatListHelp(h: ListHelp): string {
  const width = Math.max(...h.commands.map((c) => c.command.length));
  const list = h.commands.map((c) => `  ${c.command.padEnd(width)}  ${c.summary}`);
  if (h.group) {
    return [`qkt ${h.group}: a group of commands`, '', `Usage: ${h.usage}`, '', 'Commands:', ...list, '', `Run \`qkt ${h.group} <command> --help\` for its options and examples.`].join('\n');
  }
  return [
    'qkt: quantum keys for distribution terminals (KMD, carrier, terminal module, master station)',
    '',
    'Usage: qkt <command> [options]     (every command takes --json and --help)',
    '',
    'Commands:',
    ...list,
    '',
    'State lives in a home folder: --home DIR or QKT_HOME.',
    'Run `qkt <command> --help` for its options and examples. Docs: README.md, docs/.',
  ].join('\n');
}
