/** pino JSON logs; components take a child logger. Connection strings are redacted. */
import { type Logger, pino } from 'pino';

export const STDOUT = 1;
export const STDERR = 2;

/** The service logs to stdout (`STDOUT`); one-shot commands keep stdout for their answer. */
export function createLogger(level = 'info', fd: typeof STDOUT | typeof STDERR = STDERR): Logger {
  return pino(
    {
      level,
      base: { service: 'slotsync' },
      redact: {
        paths: [
          'url',
          '*.url',
          'password',
          '*.password',
          'token',
          'headers.authorization',
          'req.headers.authorization',
        ],
        censor: '*****',
      },
    },
    pino.destination({ dest: fd, sync: fd === STDERR }),
  );
}
