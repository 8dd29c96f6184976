// Compliant inputs for every resource type the policy pack checks, one per cloud, shaped like the
// provider SDK args. Tests break them one property at a time and expect the matching rule to fire.
import type { RecordedResource } from "../../policy/evaluate";

const SECRET_SIG = { "4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270" };
const secret = (value: unknown) => ({ ...SECRET_SIG, value });

export const labels = {
  "app.kubernetes.io/name": "llm-proxy",
  "app.kubernetes.io/instance": "prod",
  "app.kubernetes.io/component": "proxy",
};

const container = {
  name: "proxy",
  image: "ghcr.io/example/llm-proxy:1.0.0",
  ports: [{ containerPort: 8000, name: "http" }],
  resources: { requests: { cpu: "500m", memory: "512Mi" }, limits: { memory: "1Gi" } },
  readinessProbe: { httpGet: { path: "/readyz", port: "http" } },
  livenessProbe: { httpGet: { path: "/healthz", port: "http" } },
  securityContext: {
    runAsNonRoot: true,
    runAsUser: 10001,
    allowPrivilegeEscalation: false,
    readOnlyRootFilesystem: true,
    capabilities: { drop: ["ALL"] },
  },
};

export const good = {
  rds: {
    type: "aws:rds/instance:Instance",
    name: "db",
    inputs: {
      engine: "postgres",
      instanceClass: "db.m7g.large",
      multiAz: true,
      publiclyAccessible: false,
      dbSubnetGroupName: "llm-proxy-db-subnets",
      storageEncrypted: true,
      backupRetentionPeriod: 7,
      deletionProtection: true,
      skipFinalSnapshot: false,
      finalSnapshotIdentifier: "llm-proxy-final",
      password: secret("generated"),
    },
    options: { protect: true },
  },
  rdsParams: {
    type: "aws:rds/parameterGroup:ParameterGroup",
    name: "db-params",
    inputs: { family: "postgres16", parameters: [{ name: "rds.force_ssl", value: "1" }] },
  },
  azurePg: {
    type: "azure-native:dbforpostgresql:Server",
    name: "db",
    inputs: {
      resourceGroupName: "rg",
      version: "16",
      sku: { name: "Standard_D2ds_v5", tier: "GeneralPurpose" },
      highAvailability: { mode: "ZoneRedundant" },
      network: {
        delegatedSubnetResourceId: "/subscriptions/s/…/subnets/db",
        privateDnsZoneArmResourceId: "/…/zone",
      },
      backup: { backupRetentionDays: 14, geoRedundantBackup: "Disabled" },
    },
    options: { protect: true },
  },
  azurePgConfig: {
    type: "azure-native:dbforpostgresql:Configuration",
    name: "db-tls",
    inputs: {
      configurationName: "require_secure_transport",
      value: "on",
      serverName: "db",
      resourceGroupName: "rg",
    },
  },
  cloudSql: {
    type: "gcp:sql/databaseInstance:DatabaseInstance",
    name: "db",
    inputs: {
      databaseVersion: "POSTGRES_16",
      deletionProtection: true,
      settings: {
        tier: "db-custom-2-7680",
        edition: "ENTERPRISE",
        availabilityType: "REGIONAL",
        deletionProtectionEnabled: true,
        ipConfiguration: {
          ipv4Enabled: false,
          privateNetwork: "projects/p/global/networks/n",
          sslMode: "ENCRYPTED_ONLY",
        },
        backupConfiguration: {
          enabled: true,
          pointInTimeRecoveryEnabled: true,
          backupRetentionSettings: { retainedBackups: 14 },
        },
      },
    },
    options: { protect: true },
  },
  elasticache: {
    type: "aws:elasticache/replicationGroup:ReplicationGroup",
    name: "redis",
    inputs: {
      description: "llm-proxy",
      engine: "redis",
      numCacheClusters: 2,
      automaticFailoverEnabled: true,
      multiAzEnabled: true,
      transitEncryptionEnabled: true,
      atRestEncryptionEnabled: true,
      authToken: secret("a-long-generated-token"),
    },
  },
  azureRedis: {
    type: "azure-native:redis:Redis",
    name: "redis",
    inputs: {
      resourceGroupName: "rg",
      sku: { name: "Premium", family: "P", capacity: 1 },
      zones: ["1", "2", "3"],
      enableNonSslPort: false,
      minimumTlsVersion: "1.2",
    },
  },
  managedRedis: {
    type: "azure-native:redisenterprise:RedisEnterprise",
    name: "redis",
    inputs: {
      resourceGroupName: "rg",
      sku: { name: "Balanced_B1" },
      highAvailability: "Enabled",
      publicNetworkAccess: "Disabled",
    },
  },
  managedRedisDb: {
    type: "azure-native:redisenterprise:Database",
    name: "redis-db",
    inputs: {
      resourceGroupName: "rg",
      clusterName: "redis",
      clientProtocol: "Encrypted",
      clusteringPolicy: "EnterpriseCluster",
    },
  },
  memorystore: {
    type: "gcp:redis/instance:Instance",
    name: "redis",
    inputs: {
      memorySizeGb: 5,
      tier: "STANDARD_HA",
      authEnabled: true,
      transitEncryptionMode: "SERVER_AUTHENTICATION",
    },
  },
  efs: {
    type: "aws:efs/fileSystem:FileSystem",
    name: "fs",
    inputs: { encrypted: true, performanceMode: "generalPurpose", throughputMode: "elastic" },
  },
  azureFiles: {
    type: "azure-native:storage:StorageAccount",
    name: "fs",
    inputs: {
      resourceGroupName: "rg",
      kind: "FileStorage",
      sku: { name: "Premium_ZRS" },
      enableHttpsTrafficOnly: false,
    },
  },
  filestore: {
    type: "gcp:filestore/instance:Instance",
    name: "fs",
    inputs: {
      tier: "REGIONAL",
      location: "europe-west1",
      fileShares: { name: "kb", capacityGb: 1024 },
      networks: [{ network: "n", modes: ["MODE_IPV4"] }],
    },
  },
  azureFilesClass: {
    type: "kubernetes:storage.k8s.io/v1:StorageClass",
    name: "rwx",
    inputs: { provisioner: "file.csi.azure.com", parameters: { protocol: "nfs", skuName: "Premium_ZRS" } },
  },
  filestoreClass: {
    type: "kubernetes:storage.k8s.io/v1:StorageClass",
    name: "rwx-gcp",
    inputs: { provisioner: "filestore.csi.storage.gke.io", parameters: { tier: "regional", network: "n" } },
  },
  deployment: {
    type: "kubernetes:apps/v1:Deployment",
    name: "proxy",
    inputs: {
      apiVersion: "apps/v1",
      kind: "Deployment",
      metadata: { name: "llm-proxy", namespace: "llm-proxy", labels },
      spec: {
        selector: { matchLabels: labels },
        template: {
          metadata: { labels },
          spec: {
            securityContext: {
              runAsNonRoot: true,
              runAsUser: 10001,
              fsGroup: 10001,
              seccompProfile: { type: "RuntimeDefault" },
            },
            containers: [container],
          },
        },
      },
    },
  },
  hpa: {
    type: "kubernetes:autoscaling/v2:HorizontalPodAutoscaler",
    name: "proxy",
    inputs: {
      metadata: { name: "llm-proxy", namespace: "llm-proxy" },
      spec: {
        scaleTargetRef: { apiVersion: "apps/v1", kind: "Deployment", name: "llm-proxy" },
        minReplicas: 3,
        maxReplicas: 12,
        metrics: [
          {
            type: "Resource",
            resource: { name: "cpu", target: { type: "Utilization", averageUtilization: 70 } },
          },
        ],
      },
    },
  },
  pdb: {
    type: "kubernetes:policy/v1:PodDisruptionBudget",
    name: "proxy",
    inputs: {
      metadata: { name: "llm-proxy", namespace: "llm-proxy" },
      spec: { minAvailable: 2, selector: { matchLabels: labels } },
    },
  },
  pvc: {
    type: "kubernetes:core/v1:PersistentVolumeClaim",
    name: "kb",
    inputs: {
      metadata: { name: "knowledge-base", namespace: "llm-proxy" },
      spec: {
        accessModes: ["ReadWriteMany"],
        storageClassName: "rwx",
        resources: { requests: { storage: "100Gi" } },
      },
    },
  },
  pv: {
    type: "kubernetes:core/v1:PersistentVolume",
    name: "kb",
    inputs: {
      spec: {
        accessModes: ["ReadWriteMany"],
        capacity: { storage: "1Ti" },
        csi: { driver: "filestore.csi.storage.gke.io", volumeHandle: "modeInstance/europe-west1/fs/kb" },
      },
    },
  },
} satisfies Record<string, RecordedResource>;

export type FixtureName = keyof typeof good;

/** A deep copy of `resource` with `path` (dots; numeric parts index arrays) set to `value`, or removed for undefined. */
export function patched(resource: RecordedResource, path: string, value: unknown): RecordedResource {
  const copy = structuredClone(resource);
  if (path.startsWith("options.")) {
    copy.options = { ...copy.options, [path.slice("options.".length)]: value };
    return copy;
  }
  const parts = path.split(".");
  let node = copy.inputs as Record<string, unknown>;
  for (const part of parts.slice(0, -1)) {
    if (node[part] === undefined) node[part] = {};
    node = node[part] as Record<string, unknown>;
  }
  const last = parts[parts.length - 1];
  if (value === undefined) delete node[last];
  else node[last] = value;
  return copy;
}
