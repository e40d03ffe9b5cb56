/**
 * Loaded into a slotsync process by a test (`--import`): on SIGWINCH (a signal slotsync leaves alone) it throws an error
 * nobody catches, whose message carries a database password, to prove how the process
 * stops after an uncaught error and that the password never reaches its output.
 */
process.on('SIGWINCH', () => {
  setImmediate(() => {
    throw new Error(
      `boom from a test: could not use postgres://postgres:${process.env.THROW_SECRET}@127.0.0.1:1/postgres`,
    );
  });
});
