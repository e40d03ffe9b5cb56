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

interface Probe {
  httpGet: { path: string; port: string };
}
interface Container {
  name: string;
  ports: { name: string; containerPort: number }[];
  env?: { name: string; value: string }[];
  livenessProbe?: Probe;
  readinessProbe?: Probe;
  securityContext?: {
    allowPrivilegeEscalation?: boolean;
    readOnlyRootFilesystem?: boolean;
    capabilities?: { drop?: string[] };
  };
  volumeMounts?: { name: string; mountPath: string }[];
  resources?: { limits?: { memory?: string } };
}
interface Manifest {
  kind: string;
  metadata: { name: string; labels?: Record<string, string> };
  stringData?: Record<string, string>;
  spec: Record<string, never> & {
    template?: {
      spec: {
        containers: Container[];
        securityContext?: { runAsNonRoot?: boolean; seccompProfile?: { type: string } };
      };
    };
    volumeClaimTemplates?: { metadata: { name: string } }[];
    ports?: { name: string; port: number; targetPort?: string }[];
    selector?: { matchLabels?: Record<string, string> };
    endpoints?: {
      port: string;
      path: string;
      authorization?: { type: string; credentials: { name: string; key: string } };
    }[];
  };
}

/** "320Mi" → bytes. */
function bytes(quantity: string): number {
  const match = /^(\d+)(Ki|Mi|Gi)$/.exec(quantity);
  if (!match) return Number.NaN;
  return Number(match[1]) * 1024 ** { Ki: 1, Mi: 2, Gi: 3 }[match[2] as 'Ki' | 'Mi' | 'Gi'];
}

describe('deployment files', () => {
  it('the Kubernetes sidecar names real routes, the API port and slotsync variables only', async () => {
    const docs = parseAllDocuments(await text('deploy/kubernetes/slotsync.yaml')).map(
      (d) => d.toJS() as Manifest,
    );
    const byKind = new Map(docs.map((d) => [d.kind, d]));
    const routes = Object.keys(JSON.parse(await text('openapi/openapi.json')).paths);
    const variables = Object.keys(EnvSchema.properties);
    const port = (EnvSchema.properties.SLOTSYNC_PORT as { default: number }).default;

    const pod = byKind.get('StatefulSet')?.spec.template?.spec;
    const container = pod?.containers.find((c) => c.name === 'slotsync');
    assert.ok(pod && container, 'a slotsync container beside the database');
    assert.deepEqual(container.ports, [{ name: 'slotsync', containerPort: port }]);
    const secret = byKind.get('Secret')?.stringData ?? {};
    const names = [...(container.env ?? []).map((e) => e.name), ...Object.keys(secret)];
    assert.deepEqual(
      names.filter((n) => !variables.includes(n)),
      [],
      'every variable is one slotsync reads',
    );
    for (const required of ['SLOTSYNC_PRIMARY_URL', 'SLOTSYNC_STANDBY_URL', 'SLOTSYNC_API_TOKEN']) {
      assert.ok(names.includes(required), required);
    }
    assert.match(
      secret.SLOTSYNC_PRIMARY_URL ?? '',
      /@[^/]+,[^/]+,[^/]+\//,
      'every node, multi-host',
    );
    assert.match(secret.SLOTSYNC_STANDBY_URL ?? '', /@127\.0\.0\.1:/, 'the local node');
    assert.equal(container.env?.find((e) => e.name === 'SLOTSYNC_PORT')?.value, String(port));

    // Probes: the process answers, never the node's role or its copies; no token needed.
    for (const probe of [container.livenessProbe, container.readinessProbe]) {
      assert.equal(probe?.httpGet.path, '/health/live');
      assert.equal(probe?.httpGet.port, 'slotsync');
    }
    assert.ok(routes.includes('/health/live'));

    // Restricted Pod Security Standard; the state volume is the only thing written.
    assert.equal(pod.securityContext?.runAsNonRoot, true);
    assert.equal(pod.securityContext?.seccompProfile?.type, 'RuntimeDefault');
    assert.equal(container.securityContext?.allowPrivilegeEscalation, false);
    assert.equal(container.securityContext?.readOnlyRootFilesystem, true);
    assert.deepEqual(container.securityContext?.capabilities?.drop, ['ALL']);
    const stateDir = container.env?.find((e) => e.name === 'SLOTSYNC_STATE_DIR')?.value ?? '';
    const mount = container.volumeMounts?.find((m) => stateDir.startsWith(m.mountPath));
    assert.ok(mount, 'the state folder is on a mounted volume');
    assert.ok(
      byKind
        .get('StatefulSet')
        ?.spec.volumeClaimTemplates?.some((v) => v.metadata.name === mount.name),
    );
    // Above the measured peak (199 MB at 1,000 slots).
    assert.ok(bytes(container.resources?.limits?.memory ?? '') > 199 * 1024 ** 2);

    const service = byKind.get('Service');
    assert.ok(service?.spec.ports?.some((p) => p.port === port && p.targetPort === 'slotsync'));
    const monitor = byKind.get('ServiceMonitor');
    const endpoint = monitor?.spec.endpoints?.[0];
    assert.equal(endpoint?.port, 'slotsync');
    assert.ok(routes.includes(endpoint?.path ?? ''), 'the ServiceMonitor scrapes /metrics');
    assert.deepEqual(
      monitor?.spec.selector?.matchLabels,
      service?.metadata.labels,
      'it selects the Service by its labels',
    );
    // With SLOTSYNC_READ_TOKEN set, /metrics needs it: the ServiceMonitor sends it.
    assert.equal(endpoint?.authorization?.type, 'Bearer');
    assert.equal(endpoint?.authorization?.credentials.key, 'SLOTSYNC_READ_TOKEN');
    assert.ok(secret.SLOTSYNC_READ_TOKEN);
    assert.match(
      await text('deploy/kubernetes/slotsync.yaml'),
      /serviceMonitorSelector/,
      'says how Prometheus picks the ServiceMonitor',
    );
  });

  it('the Dockerfile exposes the API port and runs the built command line', async () => {
    const dockerfile = await text('Dockerfile');
    const port = (EnvSchema.properties.SLOTSYNC_PORT as { default: number }).default;
    assert.match(dockerfile, new RegExp(`^EXPOSE ${port}$`, 'm'));
    assert.match(dockerfile, /^ENTRYPOINT \["node", "dist\/cli\/main\.js"\]$/m);
    assert.match(dockerfile, /^USER node$/m);
  });
});
