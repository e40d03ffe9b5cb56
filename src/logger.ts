/** pino JSON logs; components take a child logger. Connection strings are redacted. */
import { type Logger, pino } from 'pino';

export function createLogger(level = 'info'): Logger {
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
    pino.destination({ dest: 2, sync: false }),
  );
}
