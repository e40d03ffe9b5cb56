/**
 * libpq's multi-host URL (`postgres://user:pw@db1:5432,db2:5432,db3/postgres?sslmode=…`),
 * which node-postgres does not take: one URL per host, every other part shared. A URL with
 * one host comes back as it is.
 */
const URL_PARTS = /^(postgres(?:ql)?:\/\/)([^@/?#]*@)?([^/?#]*)(.*)$/s;

export function expandHosts(url: string): string[] {
  const parts = URL_PARTS.exec(url);
  if (!parts) return [url];
  const [, scheme, userinfo = '', hosts = '', rest = ''] = parts;
  const list = hosts.split(',');
  if (list.length <= 1) return [url];
  return list.map((host) => `${scheme}${userinfo}${host}${rest}`);
}

/** host:port of a single-host URL, as written (for logs: never the user or password). */
export function hostOf(url: string): string {
  const parts = URL_PARTS.exec(url);
  return parts?.[3] ?? url;
}
