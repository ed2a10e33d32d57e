// The exposed tool namespace: one name per tool across all upstreams, never two tools behind one name.
import type { Tool } from '@modelcontextprotocol/sdk/types.js';
import { SidecarError } from '../errors.ts';

/**
 * Names a tool may have: what the MCP spec recommends (1 to 128 of A-Z a-z 0-9 _ - .). Anything else is refused,
 * so an invisible or look-alike character cannot pass one tool off as another in the agent's list.
 */
export const TOOL_NAME = /^[A-Za-z0-9_.-]{1,128}$/;

export interface UpstreamRef {
  readonly name: string;
  readonly namespace?: string | undefined;
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

/** Builds the catalog, or throws SIDECAR_ERR_CONFIG_INVALID naming the upstreams of the first collision. */
export function buildCatalog<U extends UpstreamRef>(
  lists: readonly { readonly upstream: U; readonly tools: readonly Tool[] }[],
): Catalog<U> {
  const catalog = new Map<string, CatalogEntry<U>>();
  for (const { upstream, tools } of lists) {
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
        const where =
          existing.upstream === upstream
            ? `upstream "${upstream.name}" lists it twice`
            : `upstreams "${existing.upstream.name}" and "${upstream.name}" both offer it`;
        throw new SidecarError(
          'SIDECAR_ERR_CONFIG_INVALID',
          `tool name collision on "${exposed}": ${where}; give one of them a \`namespace\``,
        );
      }
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
