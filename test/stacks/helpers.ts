/**
 * Shared helpers for the stack tests: run the real program offline (fresh Pulumi state per run), find
 * recorded resources, validate Kubernetes objects against the Kubernetes schema, and the app-wiring checks
 * every cloud must pass.
 */
import { expect, vi } from "vitest";
import { Deployment, StatefulSet } from "kubernetes-models/apps/v1";
import { Job } from "kubernetes-models/batch/v1";
import { HorizontalPodAutoscaler } from "kubernetes-models/autoscaling/v2";
import { Ingress, NetworkPolicy } from "kubernetes-models/networking.k8s.io/v1";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1";
import { StorageClass } from "kubernetes-models/storage.k8s.io/v1";
import {
  ConfigMap,
  Namespace,
  PersistentVolume,
  PersistentVolumeClaim,
  Secret,
  Service,
  ServiceAccount,
} from "kubernetes-models/v1";
import type { OfflineRunOptions, OfflineRunResult, RecordedResource } from "../../scripts/offline-run";
import { StackConfigError, parseStackConfig, type RawConfig } from "../../stacks/config";

/** Run the program with fresh modules (and so fresh Pulumi globals and mocks). */
export async function run(options: OfflineRunOptions): Promise<OfflineRunResult> {
  vi.resetModules();
  const mod = await import("../../scripts/offline-run.js");
  return mod.runProgramOffline(options);
}

export function all(r: OfflineRunResult, type: string): RecordedResource[] {
  return r.resources.filter((x) => x.type === type);
}

export function one(r: OfflineRunResult, type: string, name?: string): RecordedResource {
  const found = all(r, type).filter((x) => name === undefined || x.name === name);
  expect(
    found.map((x) => x.name),
    `exactly one ${type}${name ? ` named ${name}` : ""}`,
  ).toHaveLength(1);
  return found[0];
}

/** Property access on recorded JSON (tests only). */
export function at(obj: unknown, path: string): any {
  return path.split(".").reduce<any>((o, k) => (o == null ? undefined : o[k]), obj);
}

/** True when the input at `path` (or an object containing it) reached the engine as a secret. */
export function isSecretInput(res: RecordedResource, path: string): boolean {
  return res.secretInputs.some((p) => p === path || path.startsWith(`${p}.`) || path.startsWith(`${p}[`));
}

export const K8S = {
  namespace: "kubernetes:core/v1:Namespace",
  serviceAccount: "kubernetes:core/v1:ServiceAccount",
  secret: "kubernetes:core/v1:Secret",
  configMap: "kubernetes:core/v1:ConfigMap",
  job: "kubernetes:batch/v1:Job",
  service: "kubernetes:core/v1:Service",
  pvc: "kubernetes:core/v1:PersistentVolumeClaim",
  pv: "kubernetes:core/v1:PersistentVolume",
  deployment: "kubernetes:apps/v1:Deployment",
  statefulSet: "kubernetes:apps/v1:StatefulSet",
  hpa: "kubernetes:autoscaling/v2:HorizontalPodAutoscaler",
  pdb: "kubernetes:policy/v1:PodDisruptionBudget",
  networkPolicy: "kubernetes:networking.k8s.io/v1:NetworkPolicy",
  ingress: "kubernetes:networking.k8s.io/v1:Ingress",
  storageClass: "kubernetes:storage.k8s.io/v1:StorageClass",
  helmRelease: "kubernetes:helm.sh/v3:Release",
  provider: "pulumi:providers:kubernetes",
} as const;

interface Validatable {
  validate(): void;
}
type ModelClass = new (data: any) => Validatable;

const MODELS: Record<string, ModelClass> = {
  [K8S.namespace]: Namespace,
  [K8S.serviceAccount]: ServiceAccount,
  [K8S.secret]: Secret,
  [K8S.configMap]: ConfigMap,
  [K8S.service]: Service,
  [K8S.pvc]: PersistentVolumeClaim,
  [K8S.pv]: PersistentVolume,
  [K8S.deployment]: Deployment,
  [K8S.statefulSet]: StatefulSet,
  [K8S.hpa]: HorizontalPodAutoscaler,
  [K8S.pdb]: PodDisruptionBudget,
  [K8S.networkPolicy]: NetworkPolicy,
  [K8S.ingress]: Ingress,
  [K8S.storageClass]: StorageClass,
  [K8S.job]: Job,
};

/**
 * Validate every recorded Kubernetes object against the Kubernetes 1.27 schema; returns how many. A Helm release
 * is not an API object (its chart renders them in the cluster), so it is not one of them.
 */
export function validateKubernetesObjects(r: OfflineRunResult): number {
  const objects = r.resources.filter((x) => x.type.startsWith("kubernetes:") && x.type !== K8S.helmRelease);
  for (const o of objects) {
    const Model = MODELS[o.type];
    expect(Model, `a kubernetes-models class for ${o.type}`).toBeDefined();
    // The outputs are the inputs plus the provider-assigned metadata.name the API server would see.
    expect(() => new Model(o.outputs).validate(), `${o.type} ${o.name}`).not.toThrow();
  }
  return objects.length;
}

export interface CloudEndpoints {
  dbHost: string;
  dbPort: number;
  dbUser: string;
  dbName: string;
  dbPassword: string;
  redisHost: string;
  redisPort: number;
  redisToken: string;
  /** The sslmode the proxy connects with. */
  dbSslMode: "verify-full" | "verify-ca";
  /** The PEM the proxy must trust for the database, or null when its chain is publicly trusted. */
  dbCa: string | null;
  storageClass: RecordedResource;
}

/** The wiring every cloud must have between its outputs and the app component. */
export function assertAppWiring(r: OfflineRunResult, e: CloudEndpoints): void {
  const provider = one(r, K8S.provider);
  const providerRef = `${provider.urn}::${provider.id}`;

  // Every Kubernetes object goes through the cluster's provider, never an ambient kubeconfig.
  for (const o of r.resources.filter((x) => x.type.startsWith("kubernetes:"))) {
    expect(o.options.provider, `${o.type} ${o.name} provider`).toBe(providerRef);
  }

  // Secret: connection strings from the recorded database and Redis outputs, all values secret.
  const secret = one(r, K8S.secret, "llm-proxy-secret");
  const data = secret.inputs.stringData as Record<string, string>;
  expect(data.DATABASE_URL).toBe(
    `postgres://${e.dbUser}:${encodeURIComponent(e.dbPassword)}@${e.dbHost}:${e.dbPort}/${e.dbName}?sslmode=${e.dbSslMode}`,
  );
  expect(data.REDIS_URL).toBe(`rediss://:${encodeURIComponent(e.redisToken)}@${e.redisHost}:${e.redisPort}`);
  const masterKey = one(r, "random:index/randomPassword:RandomPassword", "llm-proxy-master-key");
  expect(data.PROXY_MASTER_KEY).toBe(masterKey.outputs.result);
  expect(data.PROXY_MASTER_KEY.length).toBeGreaterThanOrEqual(32);
  for (const k of Object.keys(data)) expect(isSecretInput(secret, `stringData.${k}`), k).toBe(true);

  // The config file lives in a Secret of its own (proxyConfig may hold secrets), all of it secret.
  const file = one(r, K8S.secret, "llm-proxy-config-file");
  expect(Object.keys(at(file.inputs, "stringData"))).toEqual(["config.yaml"]);
  expect(isSecretInput(file, "stringData.config.yaml")).toBe(true);

  // The ConfigMap holds only the server CAs the cloud needs (none: no ConfigMap), never a secret.
  const configMaps = all(r, K8S.configMap);
  expect(configMaps.length).toBeLessThanOrEqual(1);
  const configMap = configMaps[0] ?? { inputs: { data: {} }, outputs: {} };
  const cmText = JSON.stringify(configMap.inputs);
  for (const v of Object.values(data)) expect(cmText).not.toContain(v);
  expect(cmText).not.toContain(e.dbPassword);
  for (const k of Object.keys(at(configMap.inputs, "data"))) expect(k).toMatch(/-ca\.pem$/);

  // The database CA, where the cloud needs one, reaches the proxy as DATABASE_CA from the ConfigMap.
  const caKey = "database-ca.pem";
  const dbCaEnv = (
    at(one(r, K8S.deployment, "llm-proxy-deployment").inputs, "spec.template.spec.containers")[0].env as any[]
  ).find((x) => x.name === "DATABASE_CA");
  if (e.dbCa === null) {
    expect(at(configMap.inputs, "data")[caKey]).toBeUndefined();
    expect(dbCaEnv).toBeUndefined();
  } else {
    expect(at(configMap.inputs, "data")[caKey]).toBe(e.dbCa);
    expect(dbCaEnv.valueFrom).toEqual({
      configMapKeyRef: { name: at(configMap.outputs, "metadata.name"), key: caKey },
    });
  }

  // Claims: ReadWriteMany on the class the platform created.
  const className = at(e.storageClass.outputs, "metadata.name");
  expect(className).toBeTruthy();
  const claims = all(r, K8S.pvc);
  expect(claims.map((c) => c.name).sort()).toEqual(["llm-proxy-chroma-pvc", "llm-proxy-kb-pvc"]);
  for (const c of claims) {
    expect(at(c.inputs, "spec.storageClassName")).toBe(className);
    expect(at(c.inputs, "spec.accessModes")).toEqual(["ReadWriteMany"]);
    expect(c.options.dependencies).toContain(e.storageClass.urn);
  }

  // Deployment, Service, HPA, PDB, NetworkPolicy all select the pod template's labels.
  const dep = one(r, K8S.deployment, "llm-proxy-deployment");
  const podLabels = at(dep.inputs, "spec.template.metadata.labels") as Record<string, string>;
  const selector = at(dep.inputs, "spec.selector.matchLabels") as Record<string, string>;
  expect(Object.keys(selector).sort()).toEqual([
    "app.kubernetes.io/component",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/name",
  ]);
  for (const [k, v] of Object.entries(selector)) expect(podLabels[k]).toBe(v);
  const pdb = one(r, K8S.pdb);
  expect(at(pdb.inputs, "spec.selector.matchLabels")).toEqual(selector);
  expect(at(one(r, K8S.service, "llm-proxy-svc").inputs, "spec.selector")).toEqual(selector);
  expect(at(one(r, K8S.networkPolicy, "llm-proxy-netpol").inputs, "spec.podSelector.matchLabels")).toEqual(
    selector,
  );
  const hpa = one(r, K8S.hpa);
  expect(at(hpa.inputs, "spec.scaleTargetRef")).toEqual({
    apiVersion: "apps/v1",
    kind: "Deployment",
    name: at(dep.outputs, "metadata.name"),
  });

  // The proxy container: env from the Secret, config file mounted, KB on the RWX claim.
  const pod = at(dep.inputs, "spec.template.spec");
  const container = pod.containers[0];
  expect(container.envFrom).toEqual([{ secretRef: { name: at(secret.outputs, "metadata.name") } }]);
  const kbVolume = pod.volumes.find((v: any) => v.name === "kb");
  expect(kbVolume.persistentVolumeClaim.claimName).toBe(
    at(one(r, K8S.pvc, "llm-proxy-kb-pvc").outputs, "metadata.name"),
  );
  const env = Object.fromEntries(container.env.map((v: any) => [v.name, v.value ?? v.valueFrom]));
  expect(env.KB_DIR).toBe(container.volumeMounts.find((m: any) => m.name === "kb").mountPath);
  expect(
    env.CONFIG_FILE.startsWith(container.volumeMounts.find((m: any) => m.name === "config").mountPath),
  ).toBe(true);
  const chromaSvc = one(r, K8S.service, "llm-proxy-chroma-svc");
  expect(env.CHROMA_URL).toBe(
    `http://${at(chromaSvc.outputs, "metadata.name")}.llm-proxy.svc.cluster.local:8000`,
  );

  // The Deployment waits for the databases through the Secret.
  expect(secret.options.dependencies).toEqual(expect.arrayContaining([expect.stringContaining("::")]));

  // Stack outputs: master key and kubeconfig only as secrets; endpoints from the recorded outputs.
  expect(r.secretOutputs.sort()).toEqual(["kubeconfig", "masterKeySecret"]);
  expect(r.outputs.databaseEndpoint).toBe(`${e.dbHost}:${e.dbPort}`);
  expect(r.outputs.redisEndpoint).toBe(`${e.redisHost}:${e.redisPort}`);
  expect(r.outputs.storageClass).toBe(className);
  expect(r.outputs.proxyUrl).toBe("http://llm-proxy.llm-proxy.svc.cluster.local:8000");
  expect(r.outputs.namespace).toBe("llm-proxy");
}

/** HA and hardening properties of the proxy workload, the same on every cloud. */
export function assertWorkloadHardening(r: OfflineRunResult): void {
  const dep = one(r, K8S.deployment, "llm-proxy-deployment");
  const spec = dep.inputs.spec as any;
  const pod = spec.template.spec;
  const c = pod.containers[0];
  expect(spec.strategy).toEqual({
    type: "RollingUpdate",
    rollingUpdate: { maxUnavailable: 0, maxSurge: "25%" },
  });
  expect(spec.template.metadata.annotations["llm-proxy/checksum"]).toMatch(/^[0-9a-f]{64}$/);
  // Scrapable where Prometheus discovers pods by annotation, on the port the container serves /metrics on.
  expect(spec.template.metadata.annotations).toMatchObject({
    "prometheus.io/scrape": "true",
    "prometheus.io/port": String(pod.containers[0].ports[0].containerPort),
    "prometheus.io/path": "/metrics",
  });
  expect(pod.securityContext).toMatchObject({
    runAsNonRoot: true,
    runAsUser: 10001,
    seccompProfile: { type: "RuntimeDefault" },
  });
  expect(c.securityContext).toMatchObject({
    allowPrivilegeEscalation: false,
    readOnlyRootFilesystem: true,
    runAsNonRoot: true,
    capabilities: { drop: ["ALL"] },
  });
  expect(c.ports).toEqual([{ name: "http", containerPort: 8000 }]);
  expect(c.readinessProbe.httpGet.path).toBe("/readyz?dependencies=0");
  expect(c.livenessProbe.httpGet.path).toBe("/healthz");
  expect(c.startupProbe.httpGet.path).toBe("/healthz");
  expect(c.lifecycle.preStop.exec.command[0]).toBe("node");
  const env = Object.fromEntries(c.env.map((v: any) => [v.name, v.value]));
  expect(pod.terminationGracePeriodSeconds).toBeGreaterThan(Number(env.SHUTDOWN_GRACE_SECONDS));
  expect(Number(env.WORKERS)).toBeGreaterThanOrEqual(1);
  // Memory request covers the primary process plus every worker (service contract figures).
  expect(parseInt(c.resources.requests.memory, 10)).toBeGreaterThanOrEqual(60 + 150 * Number(env.WORKERS));
  const keys = pod.topologySpreadConstraints.map((t: any) => t.topologyKey);
  expect(keys).toEqual(["topology.kubernetes.io/zone", "kubernetes.io/hostname"]);
  expect(pod.topologySpreadConstraints[0].whenUnsatisfiable).toBe("DoNotSchedule");
  // A lost zone's nodes are tainted unreachable: honouring taints leaves that zone out of the skew, so the pods it
  // held can be replaced in the other zones (kubernetes/kubernetes#116978). Without minDomains, which would count
  // the zone out and block them again.
  expect(pod.topologySpreadConstraints[0]).toMatchObject({ maxSkew: 1, nodeTaintsPolicy: "Honor" });
  expect(pod.topologySpreadConstraints[0].nodeAffinityPolicy ?? "Honor").toBe("Honor");
  expect(pod.topologySpreadConstraints[0].minDomains).toBeUndefined();
  expect(pod.automountServiceAccountToken).toBe(false);

  // The app's namespace enforces the restricted Pod Security Standard.
  expect(
    at(one(r, K8S.namespace, "llm-proxy-ns").inputs, "metadata.labels")["pod-security.kubernetes.io/enforce"],
  ).toBe("restricted");

  // Chroma: at most one server on its files. A StatefulSet of one (a Deployment would start a replacement while the
  // old pod still runs), named by its Service, never evicted by the Cluster Autoscaler; a pinned image, reachable
  // only from proxy pods.
  expect(all(r, K8S.deployment).map((d) => d.name)).toEqual(["llm-proxy-deployment"]);
  const chroma = one(r, K8S.statefulSet, "llm-proxy-chroma");
  expect(at(chroma.inputs, "spec.replicas")).toBe(1);
  expect(at(chroma.inputs, "spec.serviceName")).toBe(
    at(one(r, K8S.service, "llm-proxy-chroma-svc").outputs, "metadata.name"),
  );
  expect(at(chroma.inputs, "spec.template.metadata.annotations")).toEqual({
    "cluster-autoscaler.kubernetes.io/safe-to-evict": "false",
  });
  expect(at(chroma.inputs, "spec.template.metadata.labels")).toMatchObject(
    at(chroma.inputs, "spec.selector.matchLabels"),
  );
  const chromaPod = at(chroma.inputs, "spec.template.spec");
  expect(chromaPod.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 10001 });
  expect(chromaPod.containers[0].securityContext).toMatchObject({
    allowPrivilegeEscalation: false,
    readOnlyRootFilesystem: true,
  });
  expect(chromaPod.containers[0].readinessProbe.httpGet.path).toBe("/api/v2/heartbeat");
  expect(chromaPod.containers[0].resources.limits.memory).toBe("2Gi");
  // The data stays on the ReadWriteMany claim (no volumeClaimTemplates), so the pod can move between zones.
  expect(at(chroma.inputs, "spec.volumeClaimTemplates")).toBeUndefined();
  expect(chromaPod.volumes.find((v: any) => v.name === "data").persistentVolumeClaim.claimName).toBe(
    at(one(r, K8S.pvc, "llm-proxy-chroma-pvc").outputs, "metadata.name"),
  );
  expect(chromaPod.containers[0].volumeMounts).toContainEqual({
    name: "data",
    mountPath: "/data",
    subPath: "chroma",
  });
  // The proxy still starts after Chroma.
  expect(dep.options.dependencies).toContain(chroma.urn);
  const image = at(chroma.inputs, "spec.template.spec.containers")[0].image as string;
  expect(image).toMatch(/:\d+\.\d+\.\d+$/);
  const chromaPolicy = one(r, K8S.networkPolicy, "llm-proxy-chroma-netpol");
  expect(at(chromaPolicy.inputs, "spec.ingress")).toEqual([
    {
      from: [{ podSelector: { matchLabels: at(dep.inputs, "spec.selector.matchLabels") } }],
      ports: [{ protocol: "TCP", port: 8000 }],
    },
  ]);
  expect(at(chromaPolicy.inputs, "spec.podSelector.matchLabels")).toEqual(
    at(chroma.inputs, "spec.selector.matchLabels"),
  );

  // HPA: autoscaling/v2 on CPU with a scale-down window; PDB leaves room for drains.
  const hpa = one(r, K8S.hpa);
  const hpaSpec = hpa.inputs.spec as any;
  expect(hpaSpec.metrics[0].resource).toEqual({
    name: "cpu",
    target: { type: "Utilization", averageUtilization: 70 },
  });
  expect(hpaSpec.behavior.scaleDown.stabilizationWindowSeconds).toBe(300);
  const pdb = one(r, K8S.pdb);
  expect(at(pdb.inputs, "spec.minAvailable")).toBeLessThan(hpaSpec.minReplicas);
  expect(spec.replicas).toBe(hpaSpec.minReplicas);
  expect(dep.options.ignoreChanges).toEqual(["spec.replicas"]);
}

/** The problems parseStackConfig reports for `raw` (fails the test if it does not throw). */
export function configProblems(
  raw: RawConfig,
  provider: { region?: string; gcpProject?: string } = { region: "eu-west-1" },
): string[] {
  try {
    parseStackConfig(raw, provider);
  } catch (error) {
    expect(error).toBeInstanceOf(StackConfigError);
    return (error as StackConfigError).problems;
  }
  throw new Error("expected the config to be rejected");
}
