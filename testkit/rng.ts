import { randomInt } from "node:crypto";

/** mulberry32: small and seedable, so a failing fuzz run can be replayed with the seed it printed. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * The seed of the n-th independent stream under seed (a request, a connection, a client): what it draws does not
 * depend on how concurrent work interleaved, so the same seed replays the same inputs.
 */
export function subSeed(seed: number, n: number): number {
  return Math.floor(rng((seed + Math.imul(n + 1, 0x9e3779b9)) >>> 0)() * 4294967296);
}

export const FUZZ_SEED_ENV = "KUASAR_FUZZ_SEED";

const hex = (seed: number) => `0x${seed.toString(16).padStart(8, "0")}`;

/** How to run a fuzz test again with this seed. */
export function replayHint(seed: number): string {
  return `seed ${hex(seed)}; replay with ${FUZZ_SEED_ENV}=${hex(seed)}`;
}

/**
 * A fuzz test's seed: KUASAR_FUZZ_SEED (decimal or 0x hex) to replay a run, otherwise a fresh one, so every run
 * explores new inputs. It is printed before the test starts, so even a run that hangs can be replayed.
 */
export function fuzzSeed(what: string): number {
  const given = process.env[FUZZ_SEED_ENV];
  let seed: number;
  if (given === undefined || given === "") {
    seed = randomInt(4294967296);
  } else {
    seed = Number(given.trim());
    if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) {
      throw new Error(
        `${FUZZ_SEED_ENV}=${JSON.stringify(given)} is not a seed: give an integer from 0 to 0xffffffff, as a fuzz run prints it`,
      );
    }
  }
  console.log(`${what}: ${replayHint(seed)}`);
  return seed;
}

/** Runs a fuzz test's body; a failure is rethrown naming the seed that replays it (the original is its cause). */
export async function withSeed<T>(seed: number, body: () => Promise<T> | T): Promise<T> {
  try {
    return await body();
  } catch (err) {
    throw new Error(`fuzz failure (${replayHint(seed)})`, { cause: err });
  }
}
