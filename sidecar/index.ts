// The package's public API: the policy engine, the context-token verifier for tool servers, and audit verification.
export { verifyAuditFile } from './audit/verify.ts';
export { ERRORS, type ErrorCode, isSidecarError, SidecarError } from './errors.ts';
export {
  CONTEXT_HEADER,
  mintContextToken,
  verifyContextToken,
  withContextHeader,
} from './identity/context-token.ts';
export { loadPublicKeys } from './identity/keys.ts';
export { type Diagnostic, formatDiagnostic } from './policy/load.ts';
export { actionDigest, compilePolicy, Policy, type RuleInfo } from './policy/policy.ts';
export { policyJsonSchema } from './policy/schema.ts';
export type { Action, ActionType, Decision, Effect } from './policy/types.ts';
export { loadPolicy, tryLoadPolicy } from './policy-file.ts';
