import { useState, type FormEvent } from "react";
import { INTERNET, listAll, type Host, type Network, type Topology } from "../api";
import { useSession } from "../session";
import { href } from "../route";
import { CardTable, ErrorBox, Listing, REFRESH_MS, Time, useAction, useLoaded } from "../ui";
import { Access } from "./Access";
import { LatencyMap } from "./Latency";
import { NetworkGraph } from "./Graph";


export function NetworkPage({ id }: { id: string }) {
  const { api } = useSession();
  const network = useLoaded(() => api<Network>("GET", `/v1/networks/${encodeURIComponent(id)}`), [api, id]);
  // Every host with an address in this network, as the API lists them (no status computed here).
  const hosts = useLoaded(
    async () =>
      (await listAll<Host>(api, "/v1/hosts", "hosts")).filter((h) => h.addresses.some((a) => a.network_id === id)),
    [api, id],
    REFRESH_MS,
  );
  // What the plan makes of the network now (who relays whom, each host's gateways, links down): the API's
  // answer, shown as it is; polled like the hosts, so a failover shows without a reload.
  const topology = useLoaded(
    () => api<Topology>("GET", `/v1/networks/${encodeURIComponent(id)}/topology`),
    [api, id],
    REFRESH_MS,
  );
  const mapped = new Map((topology.data?.hosts ?? []).map((h) => [h.host_id, h]));
  const nameOf = (hid: string | null) => (hid ? (mapped.get(hid)?.name ?? hid) : "none");
  const n = network.data;
  const online = hosts.data?.filter((h) => h.status.online).length ?? 0;

  if (!n) {
    // Not loaded (yet, or it failed): nothing of a network that may not exist, only why and the way back.
    return (
      <section aria-labelledby="network-title">
        <p>
          <a href={href({ page: "networks" })}>← All networks</a>
        </p>
        <h1 id="network-title">Network</h1>
        <ErrorBox
          error={
            network.error &&
            (network.error.includes("does not exist")
              ? `${network.error}: it may have been deleted. Go back to all networks to pick another one.`
              : network.error)
          }
          onRetry={network.reload}
        />
        {!network.error && <p aria-busy="true">Loading the network…</p>}
      </section>
    );
  }

  return (
    <section aria-labelledby="network-title">
      <p>
        <a href={href({ page: "networks" })}>← All networks</a>
      </p>
      <h1 id="network-title">{n ? n.name : "Network"}</h1>
      <ErrorBox error={network.error} onRetry={network.reload} />
      <ErrorBox
        error={topology.error && `Which gateway and relay each host uses is not known: ${topology.error}`}
        onRetry={topology.reload}
      />
      {n && (
        <dl className="facts">
          {(
            [
              ["IPv4", n.ipv4_cidr],
              ["IPv6", n.ipv6_cidr],
              ["WireGuard port", n.listen_port],
              ["MTU", n.mtu],
              ["Id", <code>{n.id}</code>],
            ] as const
          ).map(([term, value]) => (
            <div key={term}>
              <dt>{term}</dt>
              <dd>{value}</dd>
            </div>
          ))}
        </dl>
      )}
      {n && <EditNetwork network={n} onSaved={network.reload} />}
      <h2 id="hosts-title">Hosts</h2>
      <p className="hint" aria-live="polite">
        {hosts.data && `${online} of ${hosts.data.length} online. `}
        Refreshed every {REFRESH_MS / 1000} s{hosts.updatedAt && <>; last at {hosts.updatedAt.toLocaleTimeString()}</>}.
      </p>
      <Listing
        loaded={hosts}
        noun="hosts"
        empty={
          <p>
            No hosts in this network yet. Create an <a href={href({ page: "keys" })}>enrollment key</a> and run{" "}
            <code>skymesh-agent join --server {window.location.origin} --token TOKEN</code> on a host.
          </p>
        }
      >
        {(items) => (
          <CardTable caption="Hosts" columns={["Host", "Status", "Last seen", "Addresses", "Endpoints", "Gateway", "Path", "Agent"]}>
            {items.map((h) => {
              const addr = h.addresses.find((a) => a.network_id === id);
              const endpoints = [...new Set([...h.status.reported_endpoints, ...h.endpoints])];
              return (
                <tr key={h.id} data-host={h.name}>
                  <th scope="row" data-label="Host">
                    {h.name}
                  </th>
                  <td data-label="Status">
                    <span className={h.status.online ? "badge online" : "badge offline"}>
                      {h.status.online ? "Online" : "Offline"}
                    </span>
                  </td>
                  <td data-label="Last seen">
                    <Time iso={h.status.last_seen} />
                  </td>
                  <td data-label="Addresses">
                    {addr ? (
                      <>
                        {addr.ipv4}
                        <br />
                        {addr.ipv6}
                      </>
                    ) : (
                      "—"
                    )}
                  </td>
                  <td data-label="Endpoints">
                    {endpoints.length ? endpoints.join(", ") : "none reported"}
                    {h.observed_endpoint && (
                      <>
                        <br />
                        <span className="hint">seen from {h.observed_endpoint}</span>
                      </>
                    )}
                  </td>
                  <td data-label="Gateway">{gatewaysOf(mapped.get(h.id), nameOf)}</td>
                  <td data-label="Path">
                    {!mapped.has(h.id) ? "—" : mapped.get(h.id)?.relayed_by ? `via relay ${nameOf(mapped.get(h.id)!.relayed_by)}` : "direct"}
                    {mapped.get(h.id)?.relays.length ? <span className="hint"> · relays {mapped.get(h.id)!.relays.length}</span> : null}
                  </td>
                  <td data-label="Agent">{h.status.agent_version ?? "—"}</td>
                </tr>
              );
            })}
          </CardTable>
        )}
      </Listing>
      {topology.data && <NetworkGraph topology={topology.data} />}
      {hosts.data && <LatencyMap networkId={id} hosts={hosts.data} />}
      {hosts.data && <Access networkId={id} hosts={hosts.data} topology={topology.data} />}
    </section>
  );
}

/** The gateway each of a host's ranges goes to now, as the API's topology says ("none": it sends nothing beyond the network). */
function gatewaysOf(h: Topology["hosts"][number] | undefined, nameOf: (id: string | null) => string) {
  if (!h) return "—";
  if (!h.routes.length) return "none";
  return (
    <ul className="plain">
      {h.routes.map((r) => (
        <li key={r.destination}>
          {r.destination === INTERNET ? "internet" : r.destination} → {nameOf(r.gateway)}
          {r.candidates.length > 1 && <span className="hint"> (of {r.candidates.length})</span>}
        </li>
      ))}
    </ul>
  );
}

/** The settings a network keeps changeable (its ranges are fixed at creation, as the API says). */
function EditNetwork({ network, onSaved }: { network: Network; onSaved: () => void }) {
  const { api } = useSession();
  const [open, setOpen] = useState(false);
  const [name, setName] = useState(network.name);
  const [port, setPort] = useState(String(network.listen_port));
  const [keepalive, setKeepalive] = useState(String(network.keepalive));
  const [mtu, setMtu] = useState(String(network.mtu));
  const { error, busy, run } = useAction();

  if (!open) {
    return (
      <button type="button" className="secondary" onClick={() => setOpen(true)}>
        Edit settings
      </button>
    );
  }

  async function submit(e: FormEvent) {
    e.preventDefault();
    // Only what changed is sent; the API checks every value and says what is wrong.
    const body: Record<string, unknown> = {};
    if (name.trim() !== network.name) body.name = name.trim();
    if (Number(port) !== network.listen_port) body.listen_port = Number(port);
    if (Number(keepalive) !== network.keepalive) body.keepalive = Number(keepalive);
    if (Number(mtu) !== network.mtu) body.mtu = Number(mtu);
    await run(async () => {
      if (Object.keys(body).length) {
        await api<Network>("PATCH", `/v1/networks/${encodeURIComponent(network.id)}`, body);
      }
      setOpen(false);
      onSaved();
    });
  }

  return (
    <form className="panel" onSubmit={submit} aria-labelledby="edit-network-title">
      <h2 id="edit-network-title">Settings of {network.name}</h2>
      <p className="hint">Its address ranges cannot change; hosts get the new settings with their next update.</p>
      <div className="fields">
        <div>
          <label htmlFor="edit-name">Name</label>
          <input id="edit-name" required value={name} onChange={(e) => setName(e.target.value)} />
        </div>
        <div>
          <label htmlFor="edit-port">WireGuard port</label>
          <input id="edit-port" type="number" inputMode="numeric" value={port} onChange={(e) => setPort(e.target.value)} />
        </div>
        <div>
          <label htmlFor="edit-keepalive">Keepalive (seconds, 0 = off)</label>
          <input
            id="edit-keepalive"
            type="number"
            inputMode="numeric"
            value={keepalive}
            onChange={(e) => setKeepalive(e.target.value)}
          />
        </div>
        <div>
          <label htmlFor="edit-mtu">MTU</label>
          <input id="edit-mtu" type="number" inputMode="numeric" value={mtu} onChange={(e) => setMtu(e.target.value)} />
        </div>
      </div>
      <ErrorBox error={error} />
      <div className="row">
        <button type="submit" disabled={busy}>
          {busy ? "Saving…" : "Save settings"}
        </button>
        <button type="button" className="secondary" onClick={() => setOpen(false)}>
          Cancel
        </button>
      </div>
    </form>
  );
}
