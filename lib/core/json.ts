/** JSON.parse of text read from outside (a state file, a command's output), null when it is not JSON: the caller's zod schema then says what is wrong. */
export function parseJsonOrNull(text: string): unknown {
  try {
    return JSON.parse(text)
  } catch {
    return null
  }
}
