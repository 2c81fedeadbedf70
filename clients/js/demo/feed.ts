/**
 * The comment feed: a list with the newest comment first, rendered in batches and capped in size.
 *
 * @module
 */

import type { Comment } from "./payload.js";

/** Entries the feed keeps in the DOM by default; older ones are removed. */
export const DEFAULT_MAX_ENTRIES = 500;

/**
 * Milliseconds after which a batch is rendered even without an animation frame, which hidden
 * tabs do not get.
 */
const FLUSH_FALLBACK_MS = 250;

interface Pending {
  readonly offset: bigint;
  readonly comment: Comment;
}

/**
 * A list of comments, newest first. Comments added between two animation frames are rendered
 * together, so a burst of hundreds of comments costs one layout.
 */
export class Feed {
  readonly #list: HTMLElement;
  readonly #summary: HTMLElement;
  readonly #maxEntries: number;
  #pending: Pending[] = [];
  #received = 0;
  #frame: number | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;

  constructor(list: HTMLElement, summary: HTMLElement, maxEntries = DEFAULT_MAX_ENTRIES) {
    this.#list = list;
    this.#summary = summary;
    this.#maxEntries = maxEntries;
  }

  /** Number of comments added since the page opened, including those no longer in the DOM. */
  get received(): number {
    return this.#received;
  }

  /** Queues a comment; it appears at the top of the list with the next rendered batch. */
  add(offset: bigint, comment: Comment): void {
    this.#pending.push({ offset, comment });
    this.#received += 1;
    this.#schedule();
  }

  #schedule(): void {
    if (this.#timer !== undefined) {
      return;
    }
    this.#frame = requestAnimationFrame(() => this.#flush());
    this.#timer = setTimeout(() => this.#flush(), FLUSH_FALLBACK_MS);
  }

  #flush(): void {
    if (this.#frame !== undefined) {
      cancelAnimationFrame(this.#frame);
    }
    clearTimeout(this.#timer);
    this.#frame = undefined;
    this.#timer = undefined;

    // Only the newest maxEntries of a burst can stay in the list, so build no more than those.
    const batch = this.#pending.slice(-this.#maxEntries);
    this.#pending = [];
    const fragment = document.createDocumentFragment();
    for (let i = batch.length - 1; i >= 0; i--) {
      const item = batch[i];
      if (item !== undefined) {
        fragment.append(renderEntry(item));
      }
    }
    this.#list.prepend(fragment);
    while (this.#list.childElementCount > this.#maxEntries) {
      this.#list.lastElementChild?.remove();
    }
    this.#renderSummary();
  }

  #renderSummary(): void {
    const shown = this.#list.childElementCount;
    this.#list.dataset["received"] = String(this.#received);
    this.#summary.textContent =
      shown < this.#received
        ? `${this.#received} comments received, showing the newest ${shown}`
        : `${this.#received} comments received`;
  }
}

function renderEntry({ offset, comment }: Pending): HTMLLIElement {
  const entry = document.createElement("li");
  entry.className = `comment comment-${comment.kind}`;
  entry.dataset["offset"] = offset.toString();

  const author = document.createElement("span");
  author.className = "author";
  author.textContent = comment.author === "" ? "(no author)" : comment.author;

  const text = document.createElement("span");
  text.className = "text";
  text.textContent = comment.text;

  entry.append(author, text);
  return entry;
}
