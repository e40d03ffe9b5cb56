/**
 * The deployment files agree with the code: the Kubernetes manifests' probe paths are
 * routes, their ports the API's, their variables slotsync's; the Dockerfile exposes and
 * runs what the build makes.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { parseAllDocuments } from 'yaml';
import { EnvSchema } from '../../src/config.js';

const root = new URL('../../', import.meta.url);
const text = (path: string) => readFile(new URL(path, root), 'utf8');

interface Manifest {
  kind: string;
  stringData?: Record<string, string>;
  spec: Record<string, never> & {
    template?: { spec: { containers: Container[] } };
    ports?: { port: number; targetPort: string }[];
    endpoints?: { port: string; path: string }[];
  };
}
interface Container {
  ports: { name: string; containerPort: number }[];
  env: { name: string; value: string }[];
  livenessProbe: { httpGet: { path: string; port: string } };
  readinessProbe: { httpGet: { path: string; port: string } };
}

describe('deployment files', () => {
  it('the Kubernetes manifests name real routes, the API port and slotsync variables only', async () => {
    const docs = parseAllDocuments(await text('deploy/kubernetes/slotsync.yaml')).map(
      (d) => d.toJS() as Manifest,
    );
    const byKind = new Map(docs.map((d) => [d.kind, d]));
    const routes = Object.keys(JSON.parse(await text('openapi/openapi.json')).paths);
    const variables = Object.keys(EnvSchema.properties);
    const port = (EnvSchema.properties.SLOTSYNC_PORT as { default: number }).default;

    const container = byKind.get('Deployment')?.spec.template?.spec.containers[0];
    assert.ok(container);
    assert.deepEqual(container.ports, [{ name: 'http', containerPort: port }]);
    assert.ok(routes.includes(container.livenessProbe.httpGet.path));
    assert.equal(container.readinessProbe.httpGet.path, '/ready');
    assert.ok(routes.includes('/ready'));
    for (const probe of [container.livenessProbe, container.readinessProbe]) {
      assert.equal(probe.httpGet.port, 'http');
    }
    const names = [
      ...container.env.map((e) => e.name),
      ...Object.keys(byKind.get('Secret')?.stringData ?? {}),
    ];
    assert.deepEqual(
      names.filter((n) => !variables.includes(n)),
      [],
      'every variable is one slotsync reads',
    );
    assert.equal(container.env.find((e) => e.name === 'SLOTSYNC_PORT')?.value, String(port));
    for (const required of ['SLOTSYNC_PRIMARY_URL', 'SLOTSYNC_STANDBY_URL', 'SLOTSYNC_API_TOKEN']) {
      assert.ok(names.includes(required), required);
    }
    assert.deepEqual(byKind.get('Service')?.spec.ports, [
      { name: 'http', port, targetPort: 'http' },
    ]);
    const endpoint = byKind.get('ServiceMonitor')?.spec.endpoints?.[0];
    assert.equal(endpoint?.port, 'http');
    assert.ok(routes.includes(endpoint?.path ?? ''), 'the ServiceMonitor scrapes /metrics');
  });

  it('the Dockerfile exposes the API port and runs the built command line', async () => {
    const dockerfile = await text('Dockerfile');
    const port = (EnvSchema.properties.SLOTSYNC_PORT as { default: number }).default;
    assert.match(dockerfile, new RegExp(`^EXPOSE ${port}$`, 'm'));
    assert.match(dockerfile, /^ENTRYPOINT \["node", "dist\/cli\/main\.js"\]$/m);
    assert.match(dockerfile, /^USER node$/m);
  });
});
