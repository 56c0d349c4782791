/**
 * The provider's side of a REGISTRATION, typed by the spec: openapi-typescript generates
 * `schema.d.ts` from openapi.yaml, openapi-fetch makes the calls. Two invocations, with the
 * admin's round trip through Microsoft (done by the Python test) in between:
 *
 *   node flow.js start  BROKER_URL EXTERNAL_ID CALLBACK_URL STATE
 *     -> stdout: {"enterpriseId", "actionItemId", "url"}
 *   node flow.js finish BROKER_URL ENTERPRISE_ID ACTION_ITEM_ID
 *     -> stdout: {"redeemed", "again", "enterprise", "events"}
 *
 * And a Teams app deployment (DEPLOY_TEAMS_APPS) on a registered enterprise:
 *
 *   node flow.js deploy-start BROKER_URL ENTERPRISE_ID CALLBACK_URL PACKAGE_ZIP
 *     -> stdout: {"packageId", "manifestId", "version", "actionItemId", "url"}
 *   node flow.js deploy-finish BROKER_URL ENTERPRISE_ID
 *     -> stdout: {"status", "apps", "enterpriseTeamsApps"}
 *
 * Secrets come from the environment, never argv: CTT_CONTRACT_API_KEY, and for `finish`
 * CTT_CONTRACT_RESULT_CODE. The flow log goes to stderr: operation, HTTP status, key fields, no
 * secrets (no key, link, result code or token).
 */
import { readFileSync } from "node:fs";
import createClient from "openapi-fetch";
import type { components, paths } from "./schema.js";

type Schemas = components["schemas"];
type Problem = Schemas["Problem"];

class FlowError extends Error {}

function env(name: string): string {
  const value = process.env[name];
  if (value === undefined || value === "") {
    throw new FlowError(`${name} is not set`);
  }
  return value;
}

function log(operation: string, status: number, fields: Record<string, unknown>): void {
  process.stderr.write(`ts  ${operation.padEnd(18)} ${status} ${JSON.stringify(fields)}\n`);
}

/** The body of a 2xx answer, or a FlowError naming the operation and the problem's code. */
function expect<T>(
  operation: string,
  expected: number,
  result: { data?: T; error?: Problem; response: Response },
): T {
  const { data, error, response } = result;
  if (response.status !== expected || data === undefined) {
    const code = error === undefined ? "(no problem body)" : `${error.code}: ${error.detail ?? ""}`;
    throw new FlowError(`${operation}: HTTP ${response.status}, expected ${expected}: ${code}`);
  }
  return data;
}

function client(broker: string) {
  return createClient<paths>({
    baseUrl: broker,
    headers: { Authorization: `Bearer ${env("CTT_CONTRACT_API_KEY")}` },
  });
}

async function start(broker: string, externalId: string, callbackUrl: string, state: string) {
  const api = client(broker);
  const created = await api.POST("/enterprises", {
    body: { name: "Contoso (TypeScript contract)", externalId },
  });
  const enterprise: Schemas["Enterprise"] = expect("createEnterprise", 201, created);
  log("createEnterprise", created.response.status, {
    enterpriseId: enterprise.enterpriseId,
    registration: enterprise.registration.status,
  });

  const asked = await api.POST("/enterprise/getActionItemUrl", {
    body: {
      actionType: "REGISTRATION",
      enterpriseId: enterprise.enterpriseId,
      callbackUrl,
      state,
    },
  });
  const item: Schemas["ActionItemCreated"] = expect("getActionItemUrl", 201, asked);
  log("getActionItemUrl", asked.response.status, {
    actionItemId: item.actionItemId,
    actionType: item.actionType,
    status: item.status,
    expiresAt: item.expiresAt,
  });
  return { enterpriseId: enterprise.enterpriseId, actionItemId: item.actionItemId, url: item.url };
}

async function finish(broker: string, enterpriseId: string, actionItemId: string) {
  const api = client(broker);
  const resultCode = env("CTT_CONTRACT_RESULT_CODE");

  const redeemed = await api.POST("/results/redeem", { body: { resultCode } });
  const result: Schemas["Result"] = expect("redeemResult", 200, redeemed);
  const account = result.authenticationResult?.account;
  log("redeemResult", redeemed.response.status, {
    status: result.status,
    actionType: result.actionType,
    tenantId: result.tenantId,
    username: account?.username ?? null,
  });

  // A result code works once: the second redeem is a typed problem, not a result.
  const again = await api.POST("/results/redeem", { body: { resultCode } });
  if (again.response.status !== 404 || again.error?.code !== "RESULT_CODE_INVALID") {
    throw new FlowError(`redeemResult again: HTTP ${again.response.status}, expected 404`);
  }
  log("redeemResult again", again.response.status, { code: again.error.code });

  const got = await api.GET("/enterprises/{enterpriseId}", {
    params: { path: { enterpriseId } },
  });
  const enterprise: Schemas["Enterprise"] = expect("getEnterprise", 200, got);
  log("getEnterprise", got.response.status, {
    registration: enterprise.registration.status,
    tenantId: enterprise.registration.tenantId,
  });

  const listed = await api.GET("/events", { params: { query: { enterpriseId, limit: 100 } } });
  const page: Schemas["EventPage"] = expect("listEvents", 200, listed);
  const events = page.items
    .filter((event) => event.data.actionItemId === actionItemId)
    .map((event) => event.type);
  log("listEvents", listed.response.status, { types: events, nextCursor: page.nextCursor });

  return {
    redeemed: {
      status: result.status,
      actionType: result.actionType,
      tenantId: result.tenantId,
      username: account?.username ?? null,
    },
    again: again.error.code,
    enterprise: {
      registration: enterprise.registration.status,
      tenantId: enterprise.registration.tenantId,
    },
    events,
  };
}

async function deployStart(
  broker: string,
  enterpriseId: string,
  callbackUrl: string,
  packagePath: string,
) {
  const api = client(broker);
  const zip = readFileSync(packagePath);
  // The spec types an application/zip body as a binary string; the bytes go through unchanged.
  const uploaded = await api.POST("/teamsApps/packages", {
    body: zip as unknown as string,
    bodySerializer: (body) => body,
    headers: { "Content-Type": "application/zip" },
  });
  const pkg: Schemas["TeamsAppPackage"] = expect("uploadTeamsAppPackage", 201, uploaded);
  log("uploadTeamsAppPackage", uploaded.response.status, {
    packageId: pkg.packageId,
    manifestId: pkg.manifestId,
    version: pkg.version,
    current: pkg.current,
  });

  const asked = await api.POST("/enterprise/getActionItemUrl", {
    body: {
      actionType: "DEPLOY_TEAMS_APPS",
      enterpriseId,
      callbackUrl,
      teamsAppPackageIds: [pkg.packageId],
    },
  });
  const item: Schemas["ActionItemCreated"] = expect("getActionItemUrl", 201, asked);
  log("getActionItemUrl", asked.response.status, {
    actionItemId: item.actionItemId,
    actionType: item.actionType,
  });
  return {
    packageId: pkg.packageId,
    manifestId: pkg.manifestId,
    version: pkg.version,
    actionItemId: item.actionItemId,
    url: item.url,
  };
}

async function deployFinish(broker: string, enterpriseId: string) {
  const api = client(broker);
  const redeemed = await api.POST("/results/redeem", {
    body: { resultCode: env("CTT_CONTRACT_RESULT_CODE") },
  });
  const result: Schemas["Result"] = expect("redeemResult", 200, redeemed);
  const apps: Schemas["TeamsAppDeployment"][] = result.teamsApps?.apps ?? [];
  log("redeemResult", redeemed.response.status, {
    status: result.status,
    apps: apps.map((app) => `${app.status} ${app.version ?? ""}`),
  });
  const got = await api.GET("/enterprises/{enterpriseId}", {
    params: { path: { enterpriseId } },
  });
  const enterprise: Schemas["Enterprise"] = expect("getEnterprise", 200, got);
  const catalog = (enterprise.teamsApps ?? []).map((app) => ({
    manifestId: app.manifestId,
    status: app.status,
    version: app.version,
  }));
  log("getEnterprise", got.response.status, { teamsApps: catalog.length });
  return { status: result.status, apps, enterpriseTeamsApps: catalog };
}

async function main(argv: readonly string[]): Promise<unknown> {
  const [command, broker, ...rest] = argv;
  if (command === "start" && broker !== undefined && rest.length === 3) {
    const [externalId, callbackUrl, state] = rest as [string, string, string];
    return start(broker, externalId, callbackUrl, state);
  }
  if (command === "finish" && broker !== undefined && rest.length === 2) {
    const [enterpriseId, actionItemId] = rest as [string, string];
    return finish(broker, enterpriseId, actionItemId);
  }
  if (command === "deploy-start" && broker !== undefined && rest.length === 3) {
    const [enterpriseId, callbackUrl, packagePath] = rest as [string, string, string];
    return deployStart(broker, enterpriseId, callbackUrl, packagePath);
  }
  if (command === "deploy-finish" && broker !== undefined && rest.length === 1) {
    return deployFinish(broker, rest[0] as string);
  }
  throw new FlowError("usage: flow.js start BROKER EXTERNAL_ID CALLBACK_URL STATE | finish BROKER ENTERPRISE_ID ACTION_ITEM_ID");
}

main(process.argv.slice(2)).then(
  (output) => {
    process.stdout.write(`${JSON.stringify(output)}\n`);
  },
  (error: unknown) => {
    process.stderr.write(`flow.ts failed: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  },
);
