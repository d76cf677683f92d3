// Reads a command's options from its words, refusing what it does not understand (unknown or
// repeated options, a missing value, arguments the command does not take) with a usage error that
// says why and shows the right form. node:util parseArgs tokenises; the rules are ours.
import { parseArgs } from 'node:util';
import type { CommandSpec, OptionInfo, Values } from './command.js';
import { GLOBAL_OPTIONS } from './help.js';

/** The command line is wrong: exit 2 (USAGE) with this one-line message. */
export class UsageError extends Error {
  override name = 'UsageError';
}

/** A value that is a negative number (`--bits -1`) is a value, to be refused by its own check. */
const NEGATIVE = /^-(\d|\.\d)/;

export function parseCommandLine(spec: CommandSpec, args: string[]): { values: Values; positionals: string[] } {
  const options: Record<string, OptionInfo> = { ...spec.options, ...GLOBAL_OPTIONS };
  const form = `usage: ${spec.usage}`;
  const cmd = `qkt ${spec.path.join(' ')}`;
  const refuse = (why: string): never => {
    throw new UsageError(`${why}; ${form}`);
  };
  // Lenient tokenising (strict mode would call `--bits -1` "ambiguous"); every rule is checked below.
  const parsed = parseArgs({
    args,
    options: Object.fromEntries(Object.entries(options).map(([n, o]) => [n, { type: o.type, ...(o.short ? { short: o.short } : {}), ...(o.multiple ? { multiple: true } : {}), ...(o.default !== undefined ? { default: o.default } : {}) }])),
    allowPositionals: true,
    strict: false,
    tokens: true,
  });
  const seen = new Set<string>();
  let previous: (typeof parsed.tokens)[number] | undefined;
  for (const tok of parsed.tokens) {
    if (tok.kind === 'option') {
      const o = options[tok.name];
      // parseArgs names a known short option (-h) by its long name; any other name is unknown.
      if (!o) refuse(`unknown option ${tok.rawName} for ${cmd}`);
      if (o!.type === 'boolean' && tok.value !== undefined) refuse(`--${tok.name} takes no value, got ${JSON.stringify(tok.value)}`);
      if (o!.type === 'string') {
        // A following word that is an option (not a negative number) is not this option's value.
        if (tok.value === undefined || (!tok.inlineValue && tok.value.startsWith('-') && !NEGATIVE.test(tok.value))) {
          refuse(`--${tok.name} needs a value (${o!.value ?? 'VALUE'})`);
        }
      }
      if (seen.has(tok.name) && !o!.multiple && o!.type === 'string') refuse(`--${tok.name} given twice; give it once`);
      seen.add(tok.name);
    } else if (tok.kind === 'positional' && !spec.positionals) {
      const prev = previous?.kind === 'option' && !previous.inlineValue && previous.value !== undefined ? previous : undefined;
      const o = prev ? options[prev.name] : undefined;
      if (prev && o?.multiple) {
        refuse(`unexpected argument ${JSON.stringify(tok.value)}: --${prev.name} takes one value each time; give it again: --${prev.name} ${prev.value} --${prev.name} ${tok.value}`);
      }
      refuse(`unexpected argument ${JSON.stringify(tok.value)}: ${cmd} takes no arguments besides its options${prev ? ` (--${prev.name} takes one value; quote a value with spaces)` : ''}`);
    }
    if (tok.kind !== 'option-terminator') previous = tok;
  }
  return { values: parsed.values as Values, positionals: parsed.positionals };
}
