import { useState, type FormEvent } from "react";
import { ApiError, listAll, type Caller, type Network } from "../api";
import { describe, useSession } from "../session";
import { href } from "../route";
import { CardTable, ConfirmButton, ErrorBox, Listing, Time, useAction, useLoaded } from "../ui";

export function NetworksPage() {
  const { api } = useSession();
  const networks = useLoaded(() => listNetworks(api), [api]);
  const [actionError, setActionError] = useState<string | null>(null);
  const [forceable, setForceable] = useState<Network | null>(null);

  async function remove(n: Network, force: boolean) {
    setActionError(null);
    setForceable(null);
    try {
      await api("DELETE", `/v1/networks/${encodeURIComponent(n.id)}${force ? "?force=true" : ""}`);
      networks.reload();
    } catch (e) {
      setActionError(describe(e));
      if (e instanceof ApiError && e.status === 409 && !force) setForceable(n);
    }
  }

  return (
    <section aria-labelledby="networks-title">
      <h1 id="networks-title">Networks</h1>
      <CreateNetwork onCreated={networks.reload} />
      <h2>Your networks</h2>
      <ErrorBox error={actionError} />
      {forceable && (
        <p>
          To delete {forceable.name} anyway, its hosts leave it first (they stay enrolled in their other networks).{" "}
          <ConfirmButton
            text="Remove its hosts and delete"
            label={`Remove its hosts and delete ${forceable.name}`}
            question={`Remove every host from ${forceable.name} and delete it?`}
            confirmLabel="Remove hosts and delete"
            onConfirm={() => remove(forceable, true)}
          />
        </p>
      )}
      <Listing loaded={networks} noun="networks" empty={<p>No networks yet: create one above.</p>}>
        {(items) => (
          <CardTable caption="Networks" columns={["Name", "IPv4", "IPv6", "Port", "Created", "Actions"]}>
            {items.map((n) => (
              <tr key={n.id}>
                <th scope="row" data-label="Name">
                  <a href={href({ page: "network", id: n.id })}>{n.name}</a>
                </th>
                <td data-label="IPv4">{n.ipv4_cidr}</td>
                <td data-label="IPv6">{n.ipv6_cidr}</td>
                <td data-label="Port">{n.listen_port}</td>
                <td data-label="Created">
                  <Time iso={n.created_at} />
                </td>
                <td data-label="Actions">
                  <ConfirmButton
                    text="Delete"
                    label={`Delete network ${n.name}`}
                    question={`Delete ${n.name}?`}
                    confirmLabel="Delete"
                    onConfirm={() => remove(n, false)}
                  />
                </td>
              </tr>
            ))}
          </CardTable>
        )}
      </Listing>
    </section>
  );
}

export function listNetworks(api: Caller): Promise<Network[]> {
  return listAll<Network>(api, "/v1/networks", "networks");
}

function CreateNetwork({ onCreated }: { onCreated: () => void }) {
  const { api } = useSession();
  const [name, setName] = useState("");
  const [ipv4, setIpv4] = useState("");
  const [ipv6, setIpv6] = useState("");
  const { error, busy, run } = useAction();
  const [done, setDone] = useState<string | null>(null);

  async function submit(e: FormEvent) {
    e.preventDefault();
    setDone(null);
    await run(async () => {
      const n = await api<Network>("POST", "/v1/networks", {
        name: name.trim(),
        ipv4_cidr: ipv4.trim(),
        ...(ipv6.trim() ? { ipv6_cidr: ipv6.trim() } : {}),
      });
      setDone(`Created ${n.name} (${n.ipv4_cidr}, ${n.ipv6_cidr}).`);
      setName("");
      setIpv4("");
      setIpv6("");
      onCreated();
    });
  }

  return (
    <form className="panel" onSubmit={submit} aria-labelledby="create-network-title">
      <h2 id="create-network-title">Create a network</h2>
      <div className="fields">
        <div>
          <label htmlFor="network-name">Name</label>
          <input id="network-name" required value={name} onChange={(e) => setName(e.target.value)} placeholder="office" />
        </div>
        <div>
          <label htmlFor="network-ipv4">IPv4 range (CIDR)</label>
          <input id="network-ipv4" required value={ipv4} onChange={(e) => setIpv4(e.target.value)} placeholder="100.64.0.0/16" />
        </div>
        <div>
          <label htmlFor="network-ipv6">IPv6 range (optional)</label>
          <input
            id="network-ipv6"
            value={ipv6}
            onChange={(e) => setIpv6(e.target.value)}
            placeholder="a random ULA /64"
            aria-describedby="network-ipv6-hint"
          />
          <span id="network-ipv6-hint" className="hint">
            Left empty: a random ULA /64.
          </span>
        </div>
      </div>
      <ErrorBox error={error} />
      {done && (
        <p className="ok" role="status">
          {done}
        </p>
      )}
      <button type="submit" disabled={busy}>
        {busy ? "Creating…" : "Create network"}
      </button>
    </form>
  );
}
