// The dashboard's only way to the control plane: the REST API, on the page's own origin.
// Every failure becomes an ApiError whose message a person can act on; nothing here keeps
// the admin key anywhere but in the arguments it is given.

export type Network = {
  id: string;
  name: string;
  ipv4_cidr: string;
  ipv6_cidr: string;
  listen_port: number;
  keepalive: number;
  mtu: number;
  seq: number;
  created_at: string;
};

export type HostAddress = { network_id: string; ipv4: string; ipv6: string };

export type Host = {
  id: string;
  name: string;
  wg_public_key: string;
  listen_port: number;
  endpoints: string[];
  observed_endpoint: string | null;
  addresses: HostAddress[];
  tags: string[];
  created_at: string;
  status: {
    online: boolean;
    last_seen: string | null;
    agent_version: string | null;
    reported_endpoints: string[];
  };
};

export type EnrollmentKey = {
  id: string;
  networks: string[];
  uses_total: number | null;
  uses_left: number | null;
  expires_at: string | null;
  unlimited: boolean;
  tags: string[];
  revoked: boolean;
  usable: boolean;
  created_at: string;
  relay: string | null;
};

export type EnrollmentKeyCreated = EnrollmentKey & { token: string };

/** A call that failed: `status` 0 means the API could not be reached at all. */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  constructor(status: number, code: string, message: string) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const NETWORK_DOWN =
  "The skymesh API could not be reached. Check that the control plane is running " +
  "(locally: make up) and that this computer is online, then try again.";

function serverTrouble(status: number): string {
  return status >= 500
    ? `The API had an internal problem (HTTP ${status}). Try again in a moment; if it keeps ` +
        "happening, the API's log says why (locally: .skymesh/logs/api.log)."
    : `The API refused the request (HTTP ${status}) without saying why.`;
}

/** The API's own message from its error shape {"error": {"code", "message"}}, when there is one. */
function errorFrom(status: number, body: unknown): ApiError {
  const err = (body as { error?: { code?: unknown; message?: unknown } } | null)?.error;
  if (err && typeof err.message === "string" && err.message) {
    return new ApiError(status, typeof err.code === "string" ? err.code : "error", err.message);
  }
  return new ApiError(status, "unexplained", serverTrouble(status));
}

/** One call with the admin key; resolves to the parsed JSON (null for 204). */
export async function call<T>(key: string, method: string, path: string, body?: unknown): Promise<T> {
  let response: Response;
  try {
    response = await fetch(path, {
      method,
      headers: {
        Authorization: `Bearer ${key}`,
        ...(body === undefined ? {} : { "Content-Type": "application/json" }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
  } catch {
    throw new ApiError(0, "unreachable", NETWORK_DOWN);
  }
  const text = await response.text().catch(() => "");
  let parsed: unknown = null;
  if (text) {
    try {
      parsed = JSON.parse(text);
    } catch {
      if (response.ok) throw new ApiError(response.status, "not_json", "The API's answer was not JSON; is this address really the skymesh API?");
    }
  }
  if (!response.ok) throw errorFrom(response.status, parsed);
  return parsed as T;
}

/** A call bound to a key: (method, path, body?) → parsed JSON. */
export type Caller = <T>(method: string, path: string, body?: unknown) => Promise<T>;

/** Every record of a list route, following next_cursor page by page. */
export async function listAll<T>(api: Caller, path: string, field: string): Promise<T[]> {
  const out: T[] = [];
  let cursor: string | null = null;
  for (let page = 0; page < 1000; page++) {
    const q: string = cursor ? `&cursor=${encodeURIComponent(cursor)}` : "";
    const body = await api<Record<string, unknown>>("GET", `${path}?limit=100${q}`);
    out.push(...((body[field] as T[]) ?? []));
    cursor = (body.next_cursor as string | null) ?? null;
    if (!cursor) return out;
  }
  return out;
}

/** Checks an admin key with the cheapest admin call; throws ApiError when it is refused. */
export async function checkKey(key: string): Promise<void> {
  await call(key, "GET", "/v1/networks?limit=1");
}

export type Gateway = {
  network_id: string;
  host_id: string;
  name: string;
  ipv4: string;
  ipv6: string;
  remote_access: boolean;
  egress: string[];
  internet: boolean;
  endpoint: string | null;
  effective_endpoint: string | null;
};

export type Client = {
  id: string;
  network_id: string;
  name: string;
  ipv4: string;
  ipv6: string;
  gateway: string;
  enabled: boolean;
  dns: string[];
  full_tunnel: boolean;
  connected: boolean;
  latest_handshake: string | null;
  endpoint: string | null;
  rx_bytes: number;
  tx_bytes: number;
  created_at: string;
};

export type ClientIssued = { client: Client; config: string | null; qr_svg: string | null };

export type LatencyRow = { from: string; to: string; rtt_ms: number | null; loss_pct: number; up: boolean; age_s: number };

export type MemberRef = { network_id: string; host_id: string; name: string; ipv4: string; ipv6: string };
export type Relay = MemberRef & { relayed: MemberRef[] };

/** What the plan makes of a network now (GET /v1/networks/{id}/topology): the API computes every path. */
export type TopologyRoute = { destination: string; next_hop: string | null; gateway: string | null; candidates: string[] };
export type TopologyHost = {
  host_id: string;
  name: string;
  ipv4: string;
  ipv6: string;
  online: boolean;
  last_seen: string | null;
  gateway: { remote_access: boolean; egress: string[]; internet: boolean; auto_relay: boolean } | null;
  relayed_by: string | null;
  relays: string[];
  /** It peers directly with every other member but those in `via` (the API says so). */
  peer_count: number;
  via: { to: string; next_hop: string }[];
  routes: TopologyRoute[];
  down: string[];
};
export type Topology = {
  network_id: string;
  seq: number;
  hosts: TopologyHost[];
  clients: { id: string; name: string; gateway: string; served: boolean }[];
  pairs: { a: string; b: string; via: string }[];
  down_links: { from: string; to: string; loss_pct: number; age_s: number }[];
};

/** The internet as a route's destination (its IPv6 half goes with it). */
export const INTERNET = "0.0.0.0/0";

/** Who holds an HA gateway group's key (issue 11), as the API lists them (host ids). */
export type KeyCoverage = { current: string[]; pending: string[]; stale: string[]; still_know: string[] };

/** A gateway group: members share one WireGuard identity and a floating endpoint (GET …/gateway-groups). */
export type GatewayGroup = {
  id: string;
  network_id: string;
  name: string;
  /** Priority order, first = preferred. */
  members: string[];
  floating_endpoint: string;
  public_key: string | null;
  key_version: number;
  key_rotation_requested: number | null;
  /** The member the control plane records as active, and the election's epoch. */
  active: string | null;
  epoch: number;
  key: KeyCoverage | null;
  created_at: string;
};

export type MemberRemoval = { host_id: string; still_knows_key: boolean; message: string };
export type GroupChanged = { group: GatewayGroup; removed: MemberRemoval[] };
export type MemberRemoved = MemberRemoval & { group: GatewayGroup };
export type RotationRequested = { version: number; maker: string; message: string };
