export async function serve(_config: unknown): Promise<void> {
  throw new Error('not yet');
}
