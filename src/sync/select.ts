/**
 * Which failover slots slotsync looks after: SLOTSYNC_SLOTS_INCLUDE / SLOTSYNC_SLOTS_EXCLUDE,
 * comma-separated name patterns where `*` matches any run of characters. Applied to the
 * primary's slots before planning: an excluded slot is neither copied nor required by the
 * readiness gate, and the copy of a slot that becomes excluded is dropped like an obsolete one.
 */
export interface SlotSelection {
  include: readonly string[] | null;
  exclude: readonly string[] | null;
}

function matcher(patterns: readonly string[]): RegExp {
  const escaped = patterns.map((p) =>
    p
      .split('*')
      .map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))
      .join('.*'),
  );
  return new RegExp(`^(?:${escaped.join('|')})$`);
}

/** The predicate: whether a slot name is looked after. */
export function slotSelector(selection: SlotSelection): (name: string) => boolean {
  const include = selection.include === null ? null : matcher(selection.include);
  const exclude = selection.exclude === null ? null : matcher(selection.exclude);
  return (name) => (include === null || include.test(name)) && !exclude?.test(name);
}

/** `a, b,,c` → [a, b, c]; empty → null (every failover slot). */
export function slotList(text: string | undefined): string[] | null {
  const names = (text ?? '')
    .split(',')
    .map((n) => n.trim())
    .filter((n) => n !== '');
  return names.length === 0 ? null : names;
}
