/** Built-in Azure role ids and scope helpers (pure). */

/** Built-in role definition GUIDs. */
export const AZURE_ROLES = {
  networkContributor: "4d97b98b-1d4f-4787-a291-c67834d212e7",
} as const;

/** `/subscriptions/<id>` of an ARM resource id. */
export function subscriptionScope(resourceId: string): string {
  const m = /^\/subscriptions\/[^/]+/i.exec(resourceId);
  if (!m) throw new Error(`"${resourceId}" is not an Azure resource id.`);
  return m[0];
}

/** Full role definition id for a built-in role, in the subscription of `resourceId`. */
export function roleDefinitionId(resourceId: string, roleGuid: string): string {
  return `${subscriptionScope(resourceId)}/providers/Microsoft.Authorization/roleDefinitions/${roleGuid}`;
}
