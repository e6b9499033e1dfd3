import { useEffect, useMemo, useState, type FormEvent } from "react";
import { ApiError, listAll, type Client, type ClientIssued, type Gateway, type GatewayGroup, type Host, type Topology } from "../api";
import { describe, useSession } from "../session";
import { CardTable, ConfirmButton, CopyButton, ErrorBox, Listing, REFRESH_MS, Time, useAction, useLoaded } from "../ui";
import { GatewayGroups } from "./Groups";

/** Gateways of a network and its remote-access clients (devices without an agent). */
export function Access({ networkId, hosts, topology }: { networkId: string; hosts: Host[]; topology: Topology | null }) {
  const { api } = useSession();
  const base = `/v1/networks/${encodeURIComponent(networkId)}`;
  const gateways = useLoaded(async () => (await api<{ gateways: Gateway[] }>("GET", `${base}/gateways`)).gateways, [api, base], REFRESH_MS);
  const clients = useLoaded(() => listAll<Client>(api, `${base}/clients`, "clients"), [api, base], REFRESH_MS);
  // HA gateway groups: polled like the gateways, so a failover (a new active member) shows without a reload.
  const groups = useLoaded(
    async () => (await api<{ groups: GatewayGroup[] }>("GET", `${base}/gateway-groups`)).groups,
    [api, base],
    REFRESH_MS,
  );
  const [actionError, setActionError] = useState<string | null>(null);
  const [issued, setIssued] = useState<ClientIssued | null>(null);
  const names = new Map([
    ...(gateways.data ?? []).map((g) => [g.host_id, g.name] as const),
    ...(groups.data ?? []).map((g) => [g.id, `group ${g.name}`] as const),
  ]);
  // Which hosts send something to each gateway now (the topology's answer: with HA, the active one).
  const users = new Map<string, string[]>();
  for (const h of topology?.hosts ?? []) {
    for (const gw of new Set(h.routes.map((r) => r.gateway).filter((g): g is string => g !== null))) {
      users.set(gw, [...(users.get(gw) ?? []), h.name].sort());
    }
  }

  async function act(method: string, path: string, body?: unknown, reload = clients.reload) {
    setActionError(null);
    try {
      await api(method, path, body);
      reload();
    } catch (e) {
      setActionError(describe(e));
      if (e instanceof ApiError && e.status === 409) gateways.reload();
    }
  }

  return (
    <>
      <h2 id="gateways-title">Gateways</h2>
      <p className="hint">A gateway lets devices without an agent connect (remote access) or routes ranges behind it (egress).</p>
      <MakeGateway base={base} hosts={hosts} gateways={gateways.data ?? []} onSaved={gateways.reload} />
      <ErrorBox error={actionError} />
      <Listing loaded={gateways} noun="gateways" empty={<p>No gateways in this network.</p>}>
        {(items) => (
          <CardTable caption="Gateways" columns={["Gateway", "Remote access", "Egress", "Internet", "Endpoint", "Used by", "Actions"]}>
            {items.map((g) => (
              <tr key={g.host_id} data-gateway={g.name}>
                <th scope="row" data-label="Gateway">
                  {g.name}
                </th>
                <td data-label="Remote access">{g.remote_access ? "yes" : "no"}</td>
                <td data-label="Egress">{g.egress.length ? g.egress.join(", ") : "none"}</td>
                <td data-label="Internet">{g.internet ? "yes" : "no"}</td>
                <td data-label="Endpoint">{g.effective_endpoint ?? "no endpoint: set one"}</td>
                <td data-label="Used by">{topology ? users.get(g.host_id)?.join(", ") || "no host now" : "—"}</td>
                <td data-label="Actions">
                  <ConfirmButton
                    text="Remove"
                    label={`Remove the gateway role of ${g.name}`}
                    question={`Remove ${g.name} as a gateway?`}
                    confirmLabel="Remove"
                    onConfirm={() => act("DELETE", `${base}/gateways/${encodeURIComponent(g.host_id)}`, undefined, gateways.reload)}
                  />
                </td>
              </tr>
            ))}
          </CardTable>
        )}
      </Listing>

      <GatewayGroups base={base} groups={groups} gateways={gateways.data ?? []} hosts={hosts} clients={clients.data} />

      <h2 id="clients-title">Remote-access clients</h2>
      {issued ? (
        <ClientFile issued={issued} onDone={() => setIssued(null)} />
      ) : (
        <CreateClient
          base={base}
          gateways={(gateways.data ?? []).filter((g) => g.remote_access)}
          groups={groups.data ?? []}
          onCreated={(c) => {
            setIssued(c);
            clients.reload();
          }}
        />
      )}
      <Listing loaded={clients} noun="clients" empty={<p>No remote-access clients in this network.</p>}>
        {(items) => (
          <CardTable caption="Remote-access clients" columns={["Client", "State", "Address", "Gateway", "Last handshake", "Traffic", "Actions"]}>
            {items.map((c) => (
              <tr key={c.id} data-client={c.name}>
                <th scope="row" data-label="Client">
                  {c.name}
                </th>
                <td data-label="State">
                  <span className={c.connected ? "badge online" : "badge offline"}>
                    {!c.enabled ? "Disabled" : c.connected ? "Connected" : "Not connected"}
                  </span>
                </td>
                <td data-label="Address">
                  {c.ipv4}
                  <br />
                  {c.ipv6}
                </td>
                <td data-label="Gateway">{names.get(c.gateway) ?? c.gateway}</td>
                <td data-label="Last handshake">
                  <Time iso={c.latest_handshake} />
                  {c.endpoint && <span className="hint"> from {c.endpoint}</span>}
                </td>
                <td data-label="Traffic">
                  ↓ {bytes(c.rx_bytes)} ↑ {bytes(c.tx_bytes)}
                </td>
                <td data-label="Actions">
                  <span className="row">
                    <button
                      type="button"
                      className="secondary"
                      aria-label={`${c.enabled ? "Disable" : "Enable"} client ${c.name}`}
                      onClick={() => act("PATCH", `${base}/clients/${encodeURIComponent(c.id)}`, { enabled: !c.enabled })}
                    >
                      {c.enabled ? "Disable" : "Enable"}
                    </button>
                    <ConfirmButton
                      text="Delete"
                      label={`Delete client ${c.name}`}
                      question={`Delete ${c.name}? Its file stops working.`}
                      confirmLabel="Delete"
                      onConfirm={() => act("DELETE", `${base}/clients/${encodeURIComponent(c.id)}`)}
                    />
                  </span>
                </td>
              </tr>
            ))}
          </CardTable>
        )}
      </Listing>
    </>
  );
}

function bytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i ? v.toFixed(1) : v} ${units[i]}`;
}

function MakeGateway({
  base,
  hosts,
  gateways,
  onSaved,
}: {
  base: string;
  hosts: Host[];
  gateways: Gateway[];
  onSaved: () => void;
}) {
  const { api } = useSession();
  const [hostId, setHostId] = useState("");
  const [remote, setRemote] = useState(true);
  const [internet, setInternet] = useState(false);
  const [egress, setEgress] = useState("");
  const [endpoint, setEndpoint] = useState("");
  const { error, setError, busy, run } = useAction();
  const existing = gateways.find((g) => g.host_id === hostId);
  useEffect(() => {
    // Choosing a member that is a gateway already shows its role, to change it. Only when the
    // choice changes: the refreshes every few seconds must not undo what is being typed.
    setRemote(existing ? existing.remote_access : true);
    setInternet(existing?.internet ?? false);
    setEgress(existing?.egress.join(", ") ?? "");
    setEndpoint(existing?.endpoint ?? "");
  }, [hostId]);

  if (hosts.length === 0) return null;

  async function submit(e: FormEvent) {
    e.preventDefault();
    if (!hostId) {
      setError("Choose the host that becomes a gateway.");
      return;
    }
    await run(async () => {
      await api("PUT", `${base}/gateways/${encodeURIComponent(hostId)}`, {
        remote_access: remote,
        internet,
        egress: egress
          .split(/[\s,]+/)
          .map((x) => x.trim())
          .filter(Boolean),
        endpoint: endpoint.trim() || null,
      });
      onSaved();
    });
  }

  return (
    <form className="panel" onSubmit={submit} aria-labelledby="make-gateway-title">
      <h3 id="make-gateway-title">Make a host a gateway, or change one</h3>
      <div className="fields">
        <div>
          <label htmlFor="gateway-host">Host</label>
          <select id="gateway-host" value={hostId} onChange={(e) => setHostId(e.target.value)}>
            <option value="">Choose a host…</option>
            {hosts.map((h) => (
              <option key={h.id} value={h.id}>
                {h.name}
              </option>
            ))}
          </select>
        </div>
        <div>
          <label htmlFor="gateway-egress">Egress ranges (optional)</label>
          <input id="gateway-egress" value={egress} onChange={(e) => setEgress(e.target.value)} placeholder="192.168.10.0/24" />
        </div>
        <div>
          <label htmlFor="gateway-endpoint">Endpoint for clients (optional)</label>
          <input
            id="gateway-endpoint"
            value={endpoint}
            onChange={(e) => setEndpoint(e.target.value)}
            placeholder="the host's first endpoint"
          />
        </div>
      </div>
      <label className="check">
        <input type="checkbox" checked={remote} onChange={(e) => setRemote(e.target.checked)} />
        Remote access (devices connect with a wg-quick file)
      </label>
      <label className="check">
        <input type="checkbox" checked={internet} onChange={(e) => setInternet(e.target.checked)} />
        Internet gateway
      </label>
      <ErrorBox error={error} />
      <button type="submit" disabled={busy}>
        {busy ? "Saving…" : existing ? "Save gateway" : "Make gateway"}
      </button>
    </form>
  );
}

function CreateClient({
  base,
  gateways,
  groups,
  onCreated,
}: {
  base: string;
  gateways: Gateway[];
  groups: GatewayGroup[];
  onCreated: (c: ClientIssued) => void;
}) {
  const { api } = useSession();
  const [name, setName] = useState("");
  const [gateway, setGateway] = useState("");
  const [dns, setDns] = useState("");
  const { error, busy, run } = useAction();

  if (gateways.length === 0) {
    return <p>Remote-access clients connect through a gateway with remote access: make one above first.</p>;
  }

  async function submit(e: FormEvent) {
    e.preventDefault();
    await run(async () => {
      onCreated(
        await api<ClientIssued>("POST", `${base}/clients`, {
          name: name.trim(),
          gateway: gateway || gateways[0].host_id,
          dns: dns
            .split(/[\s,]+/)
            .map((x) => x.trim())
            .filter(Boolean),
        }),
      );
      setName("");
    });
  }

  return (
    <form className="panel" onSubmit={submit} aria-labelledby="create-client-title">
      <h3 id="create-client-title">Add a remote-access client</h3>
      <div className="fields">
        <div>
          <label htmlFor="client-name">Client name</label>
          <input id="client-name" required value={name} onChange={(e) => setName(e.target.value)} placeholder="alice-phone" />
        </div>
        <div>
          <label htmlFor="client-gateway">Through gateway</label>
          <select id="client-gateway" value={gateway || gateways[0].host_id} onChange={(e) => setGateway(e.target.value)}>
            <optgroup label="Gateways">
              {gateways.map((g) => (
                <option key={g.host_id} value={g.host_id}>
                  {g.name}
                </option>
              ))}
            </optgroup>
            {groups.length > 0 && (
              // A group's client connects to the floating endpoint with the group's key (it needs one first).
              <optgroup label="Gateway groups (HA)">
                {groups.map((g) => (
                  <option key={g.id} value={g.id}>
                    group {g.name}
                    {g.public_key ? "" : " (no key yet)"}
                  </option>
                ))}
              </optgroup>
            )}
          </select>
        </div>
        <div>
          <label htmlFor="client-dns">DNS servers (optional)</label>
          <input id="client-dns" value={dns} onChange={(e) => setDns(e.target.value)} placeholder="100.64.0.1" />
        </div>
      </div>
      <ErrorBox error={error} />
      <button type="submit" disabled={busy}>
        {busy ? "Adding…" : "Add client"}
      </button>
    </form>
  );
}

/** The new client's file and QR code: shown once (the private key is not kept by skymesh). */
function ClientFile({ issued, onDone }: { issued: ClientIssued; onDone: () => void }) {
  const { client, config, qr_svg } = issued;
  const fileUrl = useMemo(() => (config ? URL.createObjectURL(new Blob([config], { type: "text/plain" })) : null), [config]);
  const qrUrl = qr_svg ? `data:image/svg+xml;charset=utf-8,${encodeURIComponent(qr_svg)}` : null;
  useEffect(() => () => void (fileUrl && URL.revokeObjectURL(fileUrl)), [fileUrl]);
  return (
    <div className="panel token" role="region" aria-labelledby="client-file-title">
      <h3 id="client-file-title">The file of {client.name}: save it or scan it now</h3>
      <p>It holds the client's private key, which skymesh does not keep: this is the only time it is shown.</p>
      {qrUrl && (
        <figure className="qr">
          <img src={qrUrl} alt={`QR code of the WireGuard file of ${client.name}, for the WireGuard app`} data-qr={client.name} />
          <figcaption className="hint">Scan with the WireGuard app (PostUp/PostDown lines are left out).</figcaption>
        </figure>
      )}
      {config && (
        <>
          <label htmlFor="client-config">WireGuard file</label>
          <textarea id="client-config" readOnly rows={Math.min(16, config.split("\n").length + 1)} value={config} spellCheck={false} />
          <div className="row">
            {fileUrl && (
              <a className="button" href={fileUrl} download={`${client.name}.conf`}>
                Download {client.name}.conf
              </a>
            )}
            <CopyButton text={config} label={`Copy the WireGuard file of ${client.name}`} fallbackId="client-config" />
          </div>
        </>
      )}
      <button type="button" onClick={onDone}>
        Done
      </button>
    </div>
  );
}
