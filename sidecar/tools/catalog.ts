// The exposed tool namespace: one name per tool across all upstreams, never two tools behind one name, and never
// one (audience, tool) pair on two upstreams, so a context token minted for one upstream passes at no other.
import type { Tool } from '@modelcontextprotocol/sdk/types.js';
import { SidecarError } from '../errors.ts';
import { DEFAULT_CONTEXT_AUDIENCE } from '../identity/context-token.ts';

/**
 * Names a tool may have: what the MCP spec recommends (1 to 128 of A-Z a-z 0-9 _ - .). Anything else is refused,
 * so an invisible or look-alike character cannot pass one tool off as another in the agent's list.
 */
export const TOOL_NAME = /^[A-Za-z0-9_.-]{1,128}$/;

export interface UpstreamRef {
  readonly name: string;
  readonly namespace?: string | undefined;
  /** The `aud` of the context tokens minted for this upstream; undefined is the default audience. */
  readonly audience?: string | undefined;
}

export interface CatalogEntry<U extends UpstreamRef = UpstreamRef> {
  /** The name the agent and the policy see: `<namespace>.<tool>` or the upstream's own name. */
  readonly exposed: string;
  readonly upstream: U;
  /** The upstream's own name for the tool: what is forwarded and what the context token names. */
  readonly upstreamTool: string;
  /** The definition as the agent sees it: the upstream's, unchanged except for `name`. */
  readonly definition: Readonly<Tool>;
}

export type Catalog<U extends UpstreamRef = UpstreamRef> = ReadonlyMap<string, CatalogEntry<U>>;

/**
 * Builds the catalog, or throws SIDECAR_ERR_CONFIG_INVALID naming the upstreams of the first collision. Two kinds:
 * - two tools behind one exposed name (the agent and the policy could not tell them apart);
 * - two upstreams with the same context-token audience offering the same tool name, namespaced or not. A context
 *   token names the audience and the upstream's own tool name, nothing else: the token minted for an allowed call
 *   to one would be accepted by the other for the same arguments, a tool the policy may not allow. Each needs its
 *   own `audience` (and verifies against it).
 */
export function buildCatalog<U extends UpstreamRef>(
  lists: readonly { readonly upstream: U; readonly tools: readonly Tool[] }[],
): Catalog<U> {
  const catalog = new Map<string, CatalogEntry<U>>();
  /** audience -> the upstream's own tool name -> the upstream whose tokens carry that pair. */
  const signed = new Map<string, Map<string, U>>();
  for (const { upstream, tools } of lists) {
    const audience = upstream.audience ?? DEFAULT_CONTEXT_AUDIENCE;
    let byTool = signed.get(audience);
    if (byTool === undefined) {
      byTool = new Map();
      signed.set(audience, byTool);
    }
    for (const tool of tools) {
      if (!TOOL_NAME.test(tool.name)) {
        throw new SidecarError(
          'SIDECAR_ERR_CONFIG_INVALID',
          `upstream "${upstream.name}" offers a tool named ${visible(tool.name)}: tool names must match ${TOOL_NAME.source}`,
        );
      }
      const exposed = upstream.namespace === undefined ? tool.name : `${upstream.namespace}.${tool.name}`;
      const existing = catalog.get(exposed);
      if (existing !== undefined) {
        if (existing.upstream === upstream) {
          throw new SidecarError(
            'SIDECAR_ERR_CONFIG_INVALID',
            `tool name collision on "${exposed}": upstream "${upstream.name}" lists it twice`,
          );
        }
        // The same tool name under the same audience also needs an audience apiece, not just a namespace.
        const alsoAudience =
          existing.upstreamTool === tool.name && byTool.get(tool.name) === existing.upstream
            ? ' and each its own `audience`'
            : '';
        throw new SidecarError(
          'SIDECAR_ERR_CONFIG_INVALID',
          `tool name collision on "${exposed}": upstreams "${existing.upstream.name}" and "${upstream.name}" both offer it; give one of them a \`namespace\`${alsoAudience}`,
        );
      }
      const other = byTool.get(tool.name);
      if (other !== undefined) {
        throw new SidecarError(
          'SIDECAR_ERR_CONFIG_INVALID',
          `context audience collision on tool "${tool.name}": upstreams "${other.name}" and "${upstream.name}" both offer it and both get tokens for audience ${visible(audience)}, so a token minted for one would be accepted by the other; give each upstream its own \`audience\` (a namespace alone does not separate them)`,
        );
      }
      byTool.set(tool.name, upstream);
      catalog.set(
        exposed,
        Object.freeze({
          exposed,
          upstream,
          upstreamTool: tool.name,
          definition: Object.freeze({ ...tool, name: exposed }),
        }),
      );
    }
  }
  return catalog;
}

/** A quoted name with everything outside printable ASCII escaped, so the operator sees what is hidden in it. */
function visible(name: string): string {
  return JSON.stringify(name).replace(
    /[^\x20-\x7e]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}
