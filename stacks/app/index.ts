/**
 * The cloud-agnostic proxy deployment: only @pulumi/kubernetes. Everything cloud-specific arrives as data in
 * `platform` (endpoints, a storage class, annotations).
 */
import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import type { Platform } from "../platform";
import {
  CHROMA_PORT,
  PATHS,
  PROXY_PORT,
  PROXY_UID,
  SUB_PATHS,
  VOLUME_INIT_NAMESPACE_SUFFIX,
  checksum,
  commonLabels,
  deploymentReplicas,
  hpaSpec,
  labelsFor,
  pdbSpecFields,
  proxyConfigYaml,
  proxyPlainEnv,
  proxySettingsProblems,
  resources,
  terminationGraceSeconds,
} from "./decisions";
import type { ProxySettings } from "./settings";

export * from "./decisions";
export type { ProxySettings } from "./settings";

export interface ProxyAppArgs {
  /** Where the app runs and what it connects to. */
  platform: Platform;
  /** Sizing, replicas, image and feature settings from stack config. */
  settings: ProxySettings;
  /** Admin key (`PROXY_MASTER_KEY`), secret, >= 32 characters. */
  masterKey: pulumi.Output<string>;
  /** Provider API keys by env var name (`OPENAI_API_KEY` …), secret. */
  providerKeys: Record<string, pulumi.Output<string>>;
}

const restrictedContainer: k8s.types.input.core.v1.SecurityContext = {
  allowPrivilegeEscalation: false,
  readOnlyRootFilesystem: true,
  runAsNonRoot: true,
  capabilities: { drop: ["ALL"] },
  seccompProfile: { type: "RuntimeDefault" },
};

const restrictedPod: k8s.types.input.core.v1.PodSecurityContext = {
  runAsNonRoot: true,
  runAsUser: PROXY_UID,
  runAsGroup: PROXY_UID,
  fsGroup: PROXY_UID,
  fsGroupChangePolicy: "OnRootMismatch",
  seccompProfile: { type: "RuntimeDefault" },
};

export class ProxyApp extends pulumi.ComponentResource {
  readonly namespace: pulumi.Output<string>;
  readonly serviceName: pulumi.Output<string>;
  readonly deploymentName: pulumi.Output<string>;
  /** In-cluster URL, or the Ingress URL when one is configured. */
  readonly url: pulumi.Output<string>;
  readonly chromaUrl: pulumi.Output<string> | undefined;

  constructor(name: string, args: ProxyAppArgs, opts?: pulumi.ComponentResourceOptions) {
    super("llm-proxy:app:ProxyApp", name, {}, opts);
    const s = args.settings;
    const p = args.platform;
    const problems = proxySettingsProblems(s);
    if (problems.length > 0)
      throw new pulumi.ResourceError(`Invalid proxy settings: ${problems.join(" ")}`, this);
    const child: pulumi.CustomResourceOptions = { parent: this, provider: p.k8sProvider };
    const proxyLabels = labelsFor(name, "proxy");
    const chromaLabels = labelsFor(name, "chroma");
    const meta = (suffix: string, component: "proxy" | "chroma" = "proxy") => ({
      name: suffix ? `${name}-${suffix}` : name,
      namespace: ns.metadata.name,
      labels: commonLabels(name, component),
    });

    // Namespace, enforcing the restricted Pod Security Standard.
    const ns = new k8s.core.v1.Namespace(
      `${name}-ns`,
      {
        metadata: {
          name: s.namespace,
          labels: {
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/audit": "restricted",
          },
        },
      },
      child,
    );

    // ServiceAccount without an API token: the proxy never talks to the Kubernetes API.
    const sa = new k8s.core.v1.ServiceAccount(
      `${name}-sa`,
      { metadata: meta(""), automountServiceAccountToken: false },
      child,
    );

    // Secret: connection strings built from the cloud's outputs, the master key, provider keys.
    const db = p.database;
    const databaseUrl = pulumi.interpolate`postgres://${db.user}:${db.password.apply(encodeURIComponent)}@${db.host}:${db.port}/${db.database}?sslmode=${db.sslMode}`;
    const r = p.redis;
    const redisUrl = pulumi.interpolate`rediss://:${r.authToken.apply(encodeURIComponent)}@${r.host}:${r.port}`;
    const secretData: Record<string, pulumi.Output<string>> = {
      DATABASE_URL: pulumi.secret(databaseUrl),
      REDIS_URL: pulumi.secret(redisUrl),
      PROXY_MASTER_KEY: pulumi.secret(args.masterKey),
    };
    for (const [env, value] of Object.entries(args.providerKeys)) secretData[env] = pulumi.secret(value);
    const secret = new k8s.core.v1.Secret(
      `${name}-secret`,
      { metadata: meta("env"), type: "Opaque", stringData: secretData },
      { ...child, dependsOn: [...db.resources, ...r.resources] },
    );

    // The proxy's config file, in a Secret: proxyConfig may carry secrets (`pulumi config set --secret`), and a
    // Secret keeps the whole file out of plain-text state, previews and `kubectl get configmap`.
    const configText = pulumi.secret(proxyConfigYaml(s, Object.keys(args.providerKeys)));
    const configFile = new k8s.core.v1.Secret(
      `${name}-config-file`,
      { metadata: meta("config"), type: "Opaque", stringData: { "config.yaml": configText } },
      child,
    );

    // ConfigMap: the server CAs the cloud needs (public data), when there are any.
    const configData: Record<string, pulumi.Input<string>> = {};
    if (r.tlsCa) configData[PATHS.redisCaFile] = r.tlsCa;
    if (db.tlsCa) configData[PATHS.databaseCaFile] = db.tlsCa;
    const configMap =
      Object.keys(configData).length > 0
        ? new k8s.core.v1.ConfigMap(`${name}-config`, { metadata: meta("ca"), data: configData }, child)
        : undefined;

    // Storage: RWX claims on the platform's class; static PVs first when the platform pre-created the export.
    const claim = (key: "kb" | "chroma", sizeGi: number) => {
      const claimName = `${name}-${key}`;
      let volumeName: pulumi.Output<string> | undefined;
      if (p.storage.staticNfs) {
        const nfs = p.storage.staticNfs;
        const pv = new k8s.core.v1.PersistentVolume(
          `${name}-${key}-pv`,
          {
            metadata: {
              name: pulumi.interpolate`${s.namespace}-${claimName}`,
              labels: commonLabels(name, "proxy"),
            },
            spec: {
              capacity: { storage: `${sizeGi}Gi` },
              accessModes: ["ReadWriteMany"],
              persistentVolumeReclaimPolicy: "Retain",
              storageClassName: p.storage.storageClassName,
              mountOptions: nfs.mountOptions,
              nfs: { server: nfs.server, path: nfs.path },
              claimRef: { namespace: s.namespace, name: claimName },
            },
          },
          { ...child, dependsOn: p.storage.resources },
        );
        volumeName = pv.metadata.name;
      }
      return new k8s.core.v1.PersistentVolumeClaim(
        `${name}-${key}-pvc`,
        {
          metadata: { ...meta(key), name: claimName },
          spec: {
            accessModes: ["ReadWriteMany"],
            storageClassName: p.storage.storageClassName,
            resources: { requests: { storage: `${sizeGi}Gi` } },
            ...(volumeName ? { volumeName } : {}),
          },
        },
        { ...child, dependsOn: p.storage.resources },
      );
    };
    const kbClaim = claim("kb", s.kbStorageGi);
    const storageReady = p.storage.staticNfs ? [volumeOwnershipJob(name, p, s, p.k8sProvider, this)] : [];

    // Chroma: at most one server on its data. A StatefulSet, not a Deployment: a Deployment starts a replacement as
    // soon as the old pod is being evicted or its node stops reporting, so two servers could open the same SQLite and
    // index files; a StatefulSet starts the replacement only once the old pod is gone (a pod on a dead node must be
    // force-deleted, see README). The data stays on its RWX claim, so the pod can move to another zone.
    let chromaUrl: pulumi.Output<string> | undefined;
    let chroma: k8s.apps.v1.StatefulSet | undefined;
    if (s.chromaEnabled) {
      const chromaClaim = claim("chroma", s.chromaStorageGi);
      const chromaSvc = new k8s.core.v1.Service(
        `${name}-chroma-svc`,
        {
          metadata: meta("chroma", "chroma"),
          spec: {
            selector: chromaLabels,
            ports: [{ name: "http", port: CHROMA_PORT, targetPort: "http" }],
          },
        },
        child,
      );
      chroma = new k8s.apps.v1.StatefulSet(
        `${name}-chroma`,
        {
          metadata: meta("chroma", "chroma"),
          spec: {
            replicas: 1,
            serviceName: chromaSvc.metadata.name,
            selector: { matchLabels: chromaLabels },
            template: {
              metadata: {
                labels: commonLabels(name, "chroma"),
                // The Cluster Autoscaler must not stop the only Chroma server to empty a node.
                annotations: { "cluster-autoscaler.kubernetes.io/safe-to-evict": "false" },
              },
              spec: {
                automountServiceAccountToken: false,
                securityContext: restrictedPod,
                containers: [
                  {
                    name: "chroma",
                    image: s.chromaImage,
                    ports: [{ name: "http", containerPort: CHROMA_PORT }],
                    env: [
                      { name: "IS_PERSISTENT", value: "TRUE" },
                      { name: "PERSIST_DIRECTORY", value: PATHS.chromaData },
                      { name: "ANONYMIZED_TELEMETRY", value: "FALSE" },
                    ],
                    resources: { requests: { cpu: "250m", memory: "512Mi" }, limits: { memory: "2Gi" } },
                    readinessProbe: {
                      httpGet: { path: "/api/v2/heartbeat", port: "http" },
                      periodSeconds: 10,
                    },
                    livenessProbe: {
                      httpGet: { path: "/api/v2/heartbeat", port: "http" },
                      periodSeconds: 20,
                      failureThreshold: 6,
                    },
                    securityContext: restrictedContainer,
                    volumeMounts: [
                      { name: "data", mountPath: PATHS.chromaData, subPath: SUB_PATHS.chroma },
                      { name: "tmp", mountPath: PATHS.tmp },
                    ],
                  },
                ],
                volumes: [
                  { name: "data", persistentVolumeClaim: { claimName: chromaClaim.metadata.name } },
                  { name: "tmp", emptyDir: { sizeLimit: "256Mi" } },
                ],
              },
            },
          },
        },
        { ...child, dependsOn: storageReady },
      );
      chromaUrl = pulumi.interpolate`http://${chromaSvc.metadata.name}.${s.namespace}.svc.cluster.local:${CHROMA_PORT}`;

      // Chroma accepts traffic only from proxy pods.
      new k8s.networking.v1.NetworkPolicy(
        `${name}-chroma-netpol`,
        {
          metadata: meta("chroma", "chroma"),
          spec: {
            podSelector: { matchLabels: chromaLabels },
            policyTypes: ["Ingress"],
            ingress: [
              {
                from: [{ podSelector: { matchLabels: proxyLabels } }],
                ports: [{ protocol: "TCP", port: CHROMA_PORT }],
              },
            ],
          },
        },
        child,
      );
    }

    // Proxy Deployment.
    const plainEnv = proxyPlainEnv(s, undefined);
    const env: k8s.types.input.core.v1.EnvVar[] = Object.entries(plainEnv).map(([n, value]) => ({
      name: n,
      value,
    }));
    if (chromaUrl) env.push({ name: "CHROMA_URL", value: chromaUrl });
    const fromConfigMap = (envName: string, key: string) => {
      if (configMap)
        env.push({ name: envName, valueFrom: { configMapKeyRef: { name: configMap.metadata.name, key } } });
    };
    if (r.tlsCa) fromConfigMap("REDIS_TLS_CA", PATHS.redisCaFile);
    if (db.tlsCa) fromConfigMap("DATABASE_CA", PATHS.databaseCaFile);
    // Rolls the pods when the config file or any secret value changes; a hash of secrets is not a secret.
    const podChecksum = pulumi.unsecret(
      pulumi
        .all([pulumi.output(configData), configText, pulumi.output(secretData)])
        .apply(([c, file, sec]) => checksum(JSON.stringify(c), file, JSON.stringify(sec))),
    );
    const httpProbe = (path: string) => ({ httpGet: { path, port: "http" } });
    const deployment = new k8s.apps.v1.Deployment(
      `${name}-deployment`,
      {
        metadata: meta(""),
        spec: {
          replicas: deploymentReplicas(s),
          revisionHistoryLimit: 5,
          selector: { matchLabels: proxyLabels },
          strategy: { type: "RollingUpdate", rollingUpdate: { maxUnavailable: 0, maxSurge: "25%" } },
          template: {
            metadata: {
              labels: commonLabels(name, "proxy"),
              // The common scrape convention (the kubernetes-pods job of Prometheus' example config and most
              // agents): every pod's own /metrics, which covers all of its workers.
              annotations: {
                "llm-proxy/checksum": podChecksum,
                "prometheus.io/scrape": "true",
                "prometheus.io/port": String(PROXY_PORT),
                "prometheus.io/path": "/metrics",
              },
            },
            spec: {
              serviceAccountName: sa.metadata.name,
              automountServiceAccountToken: false,
              securityContext: restrictedPod,
              terminationGracePeriodSeconds: terminationGraceSeconds(s),
              topologySpreadConstraints: [
                {
                  maxSkew: 1,
                  topologyKey: "topology.kubernetes.io/zone",
                  whenUnsatisfiable: "DoNotSchedule",
                  labelSelector: { matchLabels: proxyLabels },
                  matchLabelKeys: ["pod-template-hash"],
                  // Nodes with a taint the pods do not tolerate (a lost zone's nodes are tainted unreachable) are
                  // not a domain: otherwise a dead zone still counts at skew 0 and replacement pods stay Pending
                  // (kubernetes/kubernetes#116978). nodeAffinityPolicy keeps its default, Honor. No minDomains: with
                  // Honor it would count the dead zone out and block scheduling again (KEP-5980).
                  nodeTaintsPolicy: "Honor",
                },
                {
                  maxSkew: 1,
                  topologyKey: "kubernetes.io/hostname",
                  whenUnsatisfiable: "ScheduleAnyway",
                  labelSelector: { matchLabels: proxyLabels },
                  matchLabelKeys: ["pod-template-hash"],
                },
              ],
              containers: [
                {
                  name: "proxy",
                  image: s.image,
                  ports: [{ name: "http", containerPort: PROXY_PORT }],
                  env,
                  envFrom: [{ secretRef: { name: secret.metadata.name } }],
                  resources: resources(s),
                  startupProbe: { ...httpProbe("/healthz"), periodSeconds: 2, failureThreshold: 30 },
                  // Draining only, not the shared database: a failover must not take every pod out at once (see
                  // service/routes/health.ts); /readyz with the database stays for monitors.
                  readinessProbe: {
                    ...httpProbe("/readyz?dependencies=0"),
                    periodSeconds: 5,
                    failureThreshold: 2,
                  },
                  livenessProbe: { ...httpProbe("/healthz"), periodSeconds: 10, failureThreshold: 3 },
                  lifecycle: {
                    // Keep serving while endpoints are removed; the image has node but maybe no `sleep`.
                    preStop: {
                      exec: {
                        command: ["node", "-e", `setTimeout(() => {}, ${s.preStopDelaySeconds * 1000})`],
                      },
                    },
                  },
                  securityContext: restrictedContainer,
                  volumeMounts: [
                    { name: "config", mountPath: PATHS.configDir, readOnly: true },
                    { name: "kb", mountPath: PATHS.kbDir, subPath: SUB_PATHS.kb },
                    { name: "kb", mountPath: PATHS.dataDir, subPath: SUB_PATHS.data },
                    { name: "tmp", mountPath: PATHS.tmp },
                  ],
                },
              ],
              volumes: [
                { name: "config", secret: { secretName: configFile.metadata.name } },
                { name: "kb", persistentVolumeClaim: { claimName: kbClaim.metadata.name } },
                { name: "tmp", emptyDir: { sizeLimit: "256Mi" } },
              ],
            },
          },
        },
      },
      {
        ...child,
        // The proxy starts once Chroma is ready (its Service no longer waits for the workload, which names it).
        dependsOn: [...storageReady, ...(chroma ? [chroma] : [])],
        // The HPA owns the replica count once it exists.
        ignoreChanges: s.autoscaling.enabled ? ["spec.replicas"] : [],
      },
    );

    // Service, internal load balancer annotations from the platform when it is a LoadBalancer.
    const service = new k8s.core.v1.Service(
      `${name}-svc`,
      {
        metadata: {
          ...meta(""),
          annotations: s.serviceType === "LoadBalancer" ? p.internalLoadBalancerAnnotations : {},
        },
        spec: {
          type: s.serviceType,
          selector: proxyLabels,
          ports: [{ name: "http", port: PROXY_PORT, targetPort: "http", protocol: "TCP" }],
        },
      },
      child,
    );

    // HorizontalPodAutoscaler on CPU.
    if (s.autoscaling.enabled) {
      new k8s.autoscaling.v2.HorizontalPodAutoscaler(
        `${name}-hpa`,
        {
          metadata: meta(""),
          spec: {
            scaleTargetRef: { apiVersion: "apps/v1", kind: "Deployment", name: deployment.metadata.name },
            ...hpaSpec(s.autoscaling),
          },
        },
        // Scales only once the cluster serves CPU metrics (metrics-server where the platform installs it).
        { ...child, dependsOn: p.metricsApi },
      );
    }

    // PodDisruptionBudget with the Deployment's selector.
    new k8s.policy.v1.PodDisruptionBudget(
      `${name}-pdb`,
      { metadata: meta(""), spec: { selector: { matchLabels: proxyLabels }, ...pdbSpecFields(s.pdb) } },
      child,
    );

    // The proxy is reachable on its port only.
    new k8s.networking.v1.NetworkPolicy(
      `${name}-netpol`,
      {
        metadata: meta(""),
        spec: {
          podSelector: { matchLabels: proxyLabels },
          policyTypes: ["Ingress"],
          ingress: [{ ports: [{ protocol: "TCP", port: PROXY_PORT }] }],
        },
      },
      child,
    );

    // Optional Ingress.
    const INGRESS_PATHS = ["/v1", "/internal", "/healthz"];
    let url = pulumi.interpolate`http://${service.metadata.name}.${s.namespace}.svc.cluster.local:${PROXY_PORT}`;
    if (s.ingress) {
      const ing = s.ingress;
      new k8s.networking.v1.Ingress(
        `${name}-ingress`,
        {
          metadata: meta(""),
          spec: {
            ...(ing.className ? { ingressClassName: ing.className } : {}),
            ...(ing.tlsSecretName ? { tls: [{ hosts: [ing.host], secretName: ing.tlsSecretName }] } : {}),
            rules: [
              {
                host: ing.host,
                http: {
                  // The APIs and liveness only: /metrics (no authentication) and /readyz stay inside the cluster.
                  paths: INGRESS_PATHS.map((path) => ({
                    path,
                    pathType: "Prefix",
                    backend: { service: { name: service.metadata.name, port: { name: "http" } } },
                  })),
                },
              },
            ],
          },
        },
        child,
      );
      url = pulumi.output(`${ing.tlsSecretName ? "https" : "http"}://${ing.host}`);
    }

    this.namespace = ns.metadata.name;
    this.serviceName = service.metadata.name;
    this.deploymentName = deployment.metadata.name;
    this.url = url;
    this.chromaUrl = chromaUrl;
    this.registerOutputs({
      namespace: this.namespace,
      serviceName: this.serviceName,
      deploymentName: this.deploymentName,
      url: this.url,
    });
  }
}

/**
 * A new NFS share's root directory belongs to root, and Kubernetes does not apply fsGroup to NFS volumes, so pods
 * running as uid 10001 could not write to it. Before the workloads start, a one-shot Job creates the sub-paths and
 * hands them to uid 10001. It needs uid 0 (with only CHOWN), which the app's namespace (restricted Pod Security
 * Standard) forbids, so it runs in a namespace of its own at the baseline standard, mounting the export directly.
 * Pulumi waits for the Job to succeed; the Deployments depend on it.
 */
function volumeOwnershipJob(
  name: string,
  p: Platform,
  s: ProxySettings,
  provider: pulumi.ProviderResource,
  parent: pulumi.Resource,
): k8s.batch.v1.Job {
  const nfs = p.storage.staticNfs!;
  const opts: pulumi.CustomResourceOptions = { parent, provider };
  const ns = new k8s.core.v1.Namespace(
    `${name}-volume-init-ns`,
    {
      metadata: {
        name: `${s.namespace}${VOLUME_INIT_NAMESPACE_SUFFIX}`,
        labels: {
          ...commonLabels(name, "proxy"),
          "pod-security.kubernetes.io/enforce": "baseline",
          "pod-security.kubernetes.io/audit": "baseline",
        },
      },
    },
    opts,
  );
  const dirs = Object.values(SUB_PATHS).map((d) => `/share/${d}`);
  return new k8s.batch.v1.Job(
    `${name}-volume-init`,
    {
      metadata: {
        name: `${name}-volume-init`,
        namespace: ns.metadata.name,
        labels: commonLabels(name, "proxy"),
      },
      spec: {
        backoffLimit: 4,
        template: {
          metadata: { labels: commonLabels(name, "proxy") },
          spec: {
            restartPolicy: "OnFailure",
            automountServiceAccountToken: false,
            securityContext: { seccompProfile: { type: "RuntimeDefault" } },
            containers: [
              {
                name: "chown",
                image: s.image,
                command: [
                  "/bin/sh",
                  "-c",
                  `mkdir -p ${dirs.join(" ")} && chown ${PROXY_UID}:${PROXY_UID} ${dirs.join(" ")}`,
                ],
                securityContext: {
                  runAsUser: 0,
                  runAsNonRoot: false,
                  allowPrivilegeEscalation: false,
                  readOnlyRootFilesystem: true,
                  capabilities: { drop: ["ALL"], add: ["CHOWN"] },
                },
                resources: {
                  requests: { cpu: "10m", memory: "32Mi" },
                  limits: { cpu: "100m", memory: "64Mi" },
                },
                volumeMounts: [{ name: "share", mountPath: "/share" }],
              },
            ],
            volumes: [{ name: "share", nfs: { server: nfs.server, path: nfs.path } }],
          },
        },
      },
    },
    { ...opts, dependsOn: p.storage.resources },
  );
}
