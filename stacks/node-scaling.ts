/**
 * Node group sizing shared by the clouds that autoscale one node group per zone (EKS node groups, AKS node pools).
 */

/** One zonal node group's bounds: its minimum (also its initial size) and its maximum. */
export interface ZonalNodeGroupScaling {
  min: number;
  max: number;
}

/**
 * Scaling of `groups` zonal node groups from the cluster-wide `minTotal` and `maxTotal`:
 * - min (and the initial size) is split as evenly as possible, the remainder going to the first groups, so the
 *   minimums add up to `minTotal` and every group has at least 1 node whenever `minTotal >= groups`;
 * - max is `maxTotal` for every group. Splitting the maximum too would cap the zones that survive a zone outage at
 *   their share, just when they must take the lost zone's pods; and a group's maximum does not move when `minTotal`
 *   does (EKS and AKS refuse a maximum below a group's current size). Where the autoscaler has a cluster-wide
 *   ceiling (EKS: `max-nodes-total`) it keeps the sum at `maxTotal`.
 */
export function zonalNodeGroupScaling(
  minTotal: number,
  maxTotal: number,
  groups: number,
): ZonalNodeGroupScaling[] {
  return Array.from({ length: groups }, (_, i) => ({
    min: Math.floor(minTotal / groups) + (i < minTotal % groups ? 1 : 0),
    max: maxTotal,
  }));
}
