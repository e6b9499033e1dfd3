import { useState, type FormEvent } from "react";
import { listAll, type EnrollmentKey, type EnrollmentKeyCreated, type Network } from "../api";
import { describe, useSession } from "../session";
import { href } from "../route";
import { CardTable, ConfirmButton, CopyButton, ErrorBox, Listing, Time, useAction, useLoaded } from "../ui";
import { listNetworks } from "./Networks";

export function KeysPage() {
  const { api } = useSession();
  const keys = useLoaded(() => listAll<EnrollmentKey>(api, "/v1/enrollment-keys", "enrollment_keys"), [api]);
  const networks = useLoaded(() => listNetworks(api), [api]);
  const [created, setCreated] = useState<EnrollmentKeyCreated | null>(null);
  const [actionError, setActionError] = useState<string | null>(null);
  const names = new Map((networks.data ?? []).map((n) => [n.id, n.name]));

  async function revoke(k: EnrollmentKey) {
    setActionError(null);
    try {
      await api("DELETE", `/v1/enrollment-keys/${encodeURIComponent(k.id)}`);
      keys.reload();
    } catch (e) {
      setActionError(describe(e));
    }
  }

  return (
    <section aria-labelledby="keys-title">
      <h1 id="keys-title">Enrollment keys</h1>
      <p className="hint">A host joins a network with an enrollment key's token. The token is shown once, when the key is created.</p>
      {created ? (
        <TokenOnce created={created} onDone={() => setCreated(null)} />
      ) : (
        <CreateKey
          networks={networks.data}
          networksError={networks.error}
          onCreated={(k) => {
            setCreated(k);
            keys.reload();
          }}
        />
      )}
      <h2>Keys</h2>
      <ErrorBox error={actionError} />
      <Listing loaded={keys} noun="keys" empty={<p>No enrollment keys yet.</p>}>
        {(items) => (
          <CardTable caption="Enrollment keys" columns={["Key", "Networks", "Uses left", "Expires", "State", "Created", "Actions"]}>
            {items.map((k) => (
              <tr key={k.id} data-key={k.id}>
                <th scope="row" data-label="Key">
                  <code>{k.id}</code>
                </th>
                <td data-label="Networks">{k.networks.map((id) => names.get(id) ?? id).join(", ")}</td>
                <td data-label="Uses left">{k.unlimited ? "unlimited" : `${k.uses_left ?? 0} of ${k.uses_total ?? 0}`}</td>
                <td data-label="Expires">{k.expires_at ? new Date(k.expires_at).toLocaleString() : "never"}</td>
                <td data-label="State">
                  <span className={k.usable ? "badge online" : "badge offline"}>
                    {k.revoked ? "Revoked" : k.usable ? "Usable" : "Used up or expired"}
                  </span>
                </td>
                <td data-label="Created">
                  <Time iso={k.created_at} />
                </td>
                <td data-label="Actions">
                  {!k.revoked && (
                    <ConfirmButton
                      text="Revoke"
                      label={`Revoke key ${k.id}`}
                      question="Revoke this key? Hosts it enrolled stay."
                      confirmLabel="Revoke"
                      onConfirm={() => revoke(k)}
                    />
                  )}
                </td>
              </tr>
            ))}
          </CardTable>
        )}
      </Listing>
    </section>
  );
}

function TokenOnce({ created, onDone }: { created: EnrollmentKeyCreated; onDone: () => void }) {
  return (
    <div className="panel token" role="region" aria-labelledby="token-title">
      <h2 id="token-title">Copy the token now</h2>
      <p>
        This is the only time the token of key <code>{created.id}</code> is shown; skymesh keeps only its hash.
      </p>
      <label htmlFor="new-token">Enrollment token</label>
      <div className="row">
        <input id="new-token" readOnly value={created.token} onFocus={(e) => e.target.select()} spellCheck={false} />
        <CopyButton text={created.token} label="Copy the enrollment token" fallbackId="new-token" />
      </div>
      <p className="hint">
        On a host: <code>skymesh-agent join --server {window.location.origin} --token …</code>
      </p>
      <button type="button" onClick={onDone}>
        I have copied it
      </button>
    </div>
  );
}

function CreateKey({
  networks,
  networksError,
  onCreated,
}: {
  networks: Network[] | null;
  networksError: string | null;
  onCreated: (k: EnrollmentKeyCreated) => void;
}) {
  const { api } = useSession();
  const [chosen, setChosen] = useState<Set<string>>(new Set());
  const [uses, setUses] = useState("1");
  const [unlimited, setUnlimited] = useState(false);
  const [expires, setExpires] = useState("");
  const { error, setError, busy, run } = useAction();

  async function submit(e: FormEvent) {
    e.preventDefault();
    if (chosen.size === 0) {
      setError("Choose at least one network for the key.");
      return;
    }
    await run(async () => {
      const body: Record<string, unknown> = { networks: [...chosen] };
      if (unlimited) body.unlimited = true;
      else body.uses = Number(uses);
      if (expires) body.expires_at = new Date(expires).toISOString();
      onCreated(await api<EnrollmentKeyCreated>("POST", "/v1/enrollment-keys", body));
    });
  }

  return (
    <form className="panel" onSubmit={submit} aria-labelledby="create-key-title">
      <h2 id="create-key-title">Create an enrollment key</h2>
      <ErrorBox error={networksError} />
      {networks === null && !networksError && <p aria-busy="true">Loading networks…</p>}
      {networks?.length === 0 && (
        <p>
          There is no network yet: <a href={href({ page: "networks" })}>create one</a> first.
        </p>
      )}
      {networks && networks.length > 0 && (
        <fieldset>
          <legend>Networks a host joins with it</legend>
          {networks.map((n) => (
            <label key={n.id} className="check">
              <input
                type="checkbox"
                checked={chosen.has(n.id)}
                onChange={(e) => {
                  const next = new Set(chosen);
                  if (e.target.checked) next.add(n.id);
                  else next.delete(n.id);
                  setChosen(next);
                }}
              />
              {n.name} <span className="hint">{n.ipv4_cidr}</span>
            </label>
          ))}
        </fieldset>
      )}
      <div className="fields">
        <div>
          <label htmlFor="key-uses">Hosts it may enroll</label>
          <input
            id="key-uses"
            type="number"
            min={1}
            inputMode="numeric"
            value={uses}
            disabled={unlimited}
            onChange={(e) => setUses(e.target.value)}
          />
          <label className="check">
            <input type="checkbox" checked={unlimited} onChange={(e) => setUnlimited(e.target.checked)} />
            Unlimited
          </label>
        </div>
        <div>
          <label htmlFor="key-expires">Expires (optional)</label>
          <input id="key-expires" type="datetime-local" value={expires} onChange={(e) => setExpires(e.target.value)} />
        </div>
      </div>
      <ErrorBox error={error} />
      <button type="submit" disabled={busy || !networks?.length}>
        {busy ? "Creating…" : "Create key"}
      </button>
    </form>
  );
}
