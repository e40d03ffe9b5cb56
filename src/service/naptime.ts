/**
 * wait_for_slot_activity(): sleep the minimum naptime after a cycle that changed something;
 * double it, up to the maximum, after every cycle that changed nothing.
 */
export function nextNaptime(current: number, updated: boolean, min: number, max: number): number {
  if (updated) return min;
  return Math.min(Math.max(current, min) * 2, max);
}
