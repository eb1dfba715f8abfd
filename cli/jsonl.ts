/** Line-oriented JSON over stdin/stdout: one result line per input line, in input order. */
import { createInterface } from 'node:readline';

export type LineHandler = (input: unknown) => unknown;

/** Runs handler on every non-empty stdin line; a line that fails yields {"error": "..."}. Resolves to the failure count. */
export async function runJsonLines(handler: LineHandler): Promise<number> {
  const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
  let failures = 0;
  let lineNo = 0;
  const out: string[] = [];
  const flush = () => {
    if (out.length) process.stdout.write(out.join(''));
    out.length = 0;
  };
  for await (const line of rl) {
    lineNo++;
    if (line.trim() === '') continue;
    let result: unknown;
    try {
      let parsed: unknown;
      try {
        parsed = JSON.parse(line);
      } catch (e) {
        throw new Error(`line ${lineNo}: not valid JSON (${(e as Error).message})`, { cause: e });
      }
      result = handler(parsed);
    } catch (e) {
      failures++;
      result = { error: `line ${lineNo}: ${(e as Error).message.replace(/^line \d+: /, '')}` };
    }
    out.push(JSON.stringify(result) + '\n');
    if (out.length >= 256) flush();
  }
  flush();
  return failures;
}
