/**
 * The process entry of `slotsync` (serve): logger, service, HTTP listener, signals.
 * SIGTERM/SIGINT: finish the in-flight cycle, close HTTP, then the pools (a second signal
 * forces the exit). SIGHUP: re-read the configuration (slotsync_reread_config()).
 */
import { readFileSync } from 'node:fs';
import { createSecureContext, type Server as TlsServer } from 'node:tls';
import closeWithGrace from 'close-with-grace';
import { type Config, configError, loadConfig, readEnvironment, secretsOf } from '../config.js';
import { messageOf } from '../errors.js';
import { createLogger, STDOUT } from '../logger.js';
import { redactSecrets, redactUrl } from '../redact.js';
import { buildApp, type TlsFiles } from './app.js';
import { isLoopback } from './plugins/auth.js';
import { SlotSyncService } from './service.js';

/**
 * How long a graceful stop may take beyond one statement's timeout (the in-flight cycle's
 * last statement, then closing HTTP and the pools) before a second signal is not needed.
 */
const CLOSE_MARGIN_MS = 10_000;
/** Open HTTP connections at most: orchestrators, probes and scrapers need a handful. */
const MAX_CONNECTIONS = 256;

/**
 * The API's certificate and key, read and checked as a pair: a bad file stops the start
 * (or a reload) with the variable's name.
 */
export function readTlsFiles(
  config: Pick<Config, 'tlsCertFile' | 'tlsKeyFile'>,
): TlsFiles | undefined {
  if (!config.tlsCertFile || !config.tlsKeyFile) return undefined;
  const read = (variable: string, path: string) => {
    try {
      return readFileSync(path, 'utf8');
    } catch (error) {
      throw configError(variable, `cannot be read: ${(error as Error).message}`);
    }
  };
  const files = {
    cert: read('SLOTSYNC_TLS_CERT_FILE', config.tlsCertFile),
    key: read('SLOTSYNC_TLS_KEY_FILE', config.tlsKeyFile),
  };
  try {
    createSecureContext(files);
  } catch (error) {
    // The key's bytes never reach the message: only OpenSSL's reason.
    throw configError(
      'SLOTSYNC_TLS_KEY_FILE',
      `and SLOTSYNC_TLS_CERT_FILE are not a usable certificate and key: ${(error as Error).message}`,
    );
  }
  return files;
}

export async function serve(config: Config): Promise<void> {
  if (!config.apiToken && !isLoopback(config.host)) {
    throw configError(
      'SLOTSYNC_API_TOKEN',
      `is required when SLOTSYNC_HOST (${config.host}) is not a loopback address`,
    );
  }
  const logger = createLogger(config.logLevel, STDOUT, secretsOf(config));
  const https = readTlsFiles(config);
  const service = await SlotSyncService.create(config, logger);
  const app = await buildApp({ service, https });
  try {
    await app.listen({ host: config.host, port: config.port });
  } catch (error) {
    await app.close();
    if ((error as NodeJS.ErrnoException).code === 'EADDRINUSE') {
      throw configError('SLOTSYNC_PORT', `${config.port} on ${config.host} is already in use`);
    }
    throw error;
  }
  app.server.maxConnections = MAX_CONNECTIONS;
  logger.info(
    {
      protocol: https ? 'https' : 'http',
      primary: redactUrl(config.primaryUrl),
      standby: redactUrl(config.standbyUrl),
      worker: config.worker,
      stateDir: config.stateDir,
    },
    'slotsync listening',
  );
  service.start();

  let closing = false;
  process.on('SIGHUP', () => {
    if (closing) return; // stopping: a reload would start what is being stopped
    let next: Config;
    try {
      next = loadConfig(readEnvironment(process.env, (path) => readFileSync(path, 'utf8')));
    } catch (error) {
      logger.error(
        { err: redactSecrets(messageOf(error), secretsOf(config)) },
        'configuration reload refused; the running configuration is kept',
      );
      return;
    }
    if (https) {
      // A renewed certificate (cert-manager, certbot) is taken without a restart.
      try {
        const files = readTlsFiles(next);
        if (!files)
          throw configError(
            'SLOTSYNC_TLS_CERT_FILE',
            'is unset: HTTPS stays on until the next start',
          );
        (app.server as unknown as TlsServer).setSecureContext({ ...files, minVersion: 'TLSv1.2' });
        logger.info('TLS certificate re-read');
      } catch (error) {
        logger.error(
          { err: messageOf(error) },
          'TLS certificate reload refused; the running certificate is kept',
        );
      }
    } else if (next.tlsCertFile) {
      logger.warn('SLOTSYNC_TLS_CERT_FILE takes effect at the next start');
    }
    service
      .reload(next)
      .then((outcome) => logger.info({ outcome }, 'configuration reloaded'))
      .catch((error) => logger.error({ err: messageOf(error) }, 'configuration reload failed'));
  });

  // SIGHUP reloads the configuration (above); close-with-grace would otherwise close on it.
  closeWithGrace(
    // The in-flight cycle may be waiting on a copy creation: the grace period covers it.
    {
      delay: Math.max(config.statementTimeoutMs, config.createTimeoutMs) + CLOSE_MARGIN_MS,
      skip: ['SIGHUP'],
    },
    async ({ signal, err }) => {
      closing = true;
      // Uncaught errors land here too: message and stack, secrets redacted by the logger.
      if (err) {
        logger.error(
          { err: messageOf(err), stack: (err as Error).stack },
          'stopping after an error',
        );
      }
      logger.info({ signal }, 'stopping: finishing the in-flight cycle');
      // HTTP first (no new request starts a cycle), then the service: the worker finishes
      // its cycle, the lock is released, the pools close (the service plugin's onClose).
      await app.close();
      logger.info('stopped');
    },
  );
}
