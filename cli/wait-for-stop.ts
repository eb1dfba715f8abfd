/** The long-running commands stop on SIGINT or SIGTERM. */

/** Resolves with the name of the first SIGINT or SIGTERM (its handlers removed then). */
export function waitForStop(): Promise<string> {
  return new Promise((resolve) => {
    const done = (sig: string) => {
      process.off('SIGINT', onInt);
      process.off('SIGTERM', onTerm);
      resolve(sig);
    };
    const onInt = () => done('SIGINT');
    const onTerm = () => done('SIGTERM');
    process.on('SIGINT', onInt);
    process.on('SIGTERM', onTerm);
  });
}
