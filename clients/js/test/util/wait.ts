/** Deadline helpers: every wait in the tests is bounded in time. */

/** Resolves with `promise`, or rejects naming `what` once `ms` milliseconds have passed. */
export async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, expired]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `check` every 10 ms until it returns true; rejects naming `what` after `ms`. */
export async function waitUntil(check: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Takes `count` items from `iterator`, failing once `ms` milliseconds have passed in all. */
export async function take<T>(
  iterator: AsyncIterator<T>,
  count: number,
  ms: number,
  what: string,
): Promise<T[]> {
  const items: T[] = [];
  const deadline = Date.now() + ms;
  while (items.length < count) {
    const left = Math.max(deadline - Date.now(), 0);
    const position = `${what} ${items.length + 1} of ${count}`;
    const result = await withTimeout(iterator.next(), left, position);
    if (result.done === true) {
      throw new Error(`the iterator ended before ${position}`);
    }
    items.push(result.value);
  }
  return items;
}
