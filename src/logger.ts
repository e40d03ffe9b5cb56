/** pino JSON logs; components take a child logger. Connection strings are redacted. */
import { type Logger, pino } from 'pino';

export function createLogger(level = 'info', fd: 1 | 2 = 2): Logger {
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
    pino.destination({ dest: fd, sync: fd === 2 }),
  );
}
