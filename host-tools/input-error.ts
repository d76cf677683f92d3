// A value the user gave (an option, an address, an id) that a library refuses. Thrown by library
// entry points that validate user values; host-tools/cli/errors.ts maps it to the usage exit code.
// It is a RangeError, so code that already treats RangeError as "bad input" (a handler answering
// BAD_REQUEST) keeps doing so; a plain RangeError or TypeError is a bug, reported as one.
export class InputError extends RangeError {
  constructor(message: string) {
    super(message);
    this.name = 'InputError';
  }
}
