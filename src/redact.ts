/** Connection strings and messages never carry passwords out of the process. */
import { expandHosts, hostOf } from './urls.js';

export function redactUrl(url: string): string {
  const hosts = expandHosts(url);
  if (hosts.length > 1) {
    // One host's URL redacted, then the others' hosts put back in place.
    const one = redactUrl(hosts[0] as string);
    return one.replace(hostOf(hosts[0] as string), hosts.map(hostOf).join(','));
  }
  try {
    const parsed = new URL(url);
    if (parsed.password !== '') parsed.password = '*****';
    for (const key of ['password', 'sslpassword']) {
      if (parsed.searchParams.has(key)) parsed.searchParams.set(key, '*****');
    }
    return parsed.toString();
  } catch {
    return url.replace(/:\/\/([^:/@]*):[^@]*@/, '://$1:*****@');
  }
}

/** Removes every given secret from a text (error messages can echo a connection string). */
export function redactSecrets(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const secret of secrets) {
    if (secret.length >= 3) out = out.split(secret).join('*****');
  }
  return out
    .replace(/(postgres(?:ql)?:\/\/[^:/@\s]*):[^@\s]*@/g, '$1:*****@')
    .replace(/\b(password|sslpassword)=('[^']*'|[^\s&]+)/gi, '$1=*****');
}

/** The passwords of connection URLs, to redact wherever they appear. */
export function passwordsOf(...urls: string[]): string[] {
  const found: string[] = [];
  for (const url of urls.flatMap((u) => expandHosts(u))) {
    try {
      const parsed = new URL(url);
      if (parsed.password) found.push(decodeURIComponent(parsed.password));
      const inQuery = parsed.searchParams.get('password');
      if (inQuery) found.push(inQuery);
    } catch {
      // not a URL: nothing to take from it
    }
  }
  return found;
}
