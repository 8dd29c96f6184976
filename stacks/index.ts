/**
 * The llm-proxy Pulumi program: read config once → build the cloud's Platform → deploy the app component →
 * export. The only module that creates resources at top level, and the only switch on `cloud`.
 */
import * as pulumi from "@pulumi/pulumi";
import * as random from "@pulumi/random";
import { ProxyApp } from "./app";
import { createAwsPlatform } from "./aws";
import { createAzurePlatform } from "./azure";
import { loadStackConfig, type Cloud, type StackConfig } from "./config";
import { createGcpPlatform } from "./gcp";
import type { Platform } from "./platform";

type PlatformFactory = (name: string, config: StackConfig, tags: Record<string, string>) => Platform;

/** The one lookup table on cloud. */
const PLATFORMS: Record<Cloud, PlatformFactory> = {
  aws: createAwsPlatform,
  azure: createAzurePlatform,
  gcp: createGcpPlatform,
};

const config = loadStackConfig();
const name = "llm-proxy";
const tags = { project: "llm-proxy", stack: pulumi.getStack(), "managed-by": "pulumi" };

const platform = PLATFORMS[config.cloud](name, config, tags);

// Admin key: generated once, kept secret in the stack state.
const masterKey = new random.RandomPassword(`${name}-master-key`, { length: 48, special: false });

const app = new ProxyApp(name, {
  platform,
  settings: config.proxy,
  masterKey: masterKey.result,
  providerKeys: config.providerKeys,
});

export const cloud = config.cloud;
export const namespace = app.namespace;
export const proxyService = app.serviceName;
export const proxyUrl = app.url;
export const clusterName = platform.clusterName;
export const networkId = platform.networkId;
export const databaseEndpoint = pulumi.interpolate`${platform.database.host}:${platform.database.port}`;
export const redisEndpoint = pulumi.interpolate`${platform.redis.host}:${platform.redis.port}`;
export const filesystemId = platform.storage.filesystemId;
export const storageClass = platform.storage.storageClassName;
export const masterKeySecret = pulumi.secret(masterKey.result);
export const kubeconfig = pulumi.secret(platform.kubeconfig);
