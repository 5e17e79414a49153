// The rules of the CycloneDX 1.5 JSON schema (http://cyclonedx.org/schema/bom-1.5.schema.json) for every field
// pipeline/dist/sbom.ts writes: required fields, closed objects (additionalProperties: false), enums and patterns.
// Shared by the SBOM's unit test and the bundle test; returns what is wrong, empty when nothing is.

const TOP_KEYS = [
  "$schema",
  "bomFormat",
  "specVersion",
  "serialNumber",
  "version",
  "metadata",
  "components",
  "services",
  "externalReferences",
  "dependencies",
  "compositions",
  "vulnerabilities",
  "annotations",
  "properties",
  "signature",
];
const METADATA_KEYS = [
  "timestamp",
  "tools",
  "authors",
  "component",
  "manufacture",
  "supplier",
  "licenses",
  "properties",
];
const COMPONENT_KEYS = [
  "type",
  "mime-type",
  "bom-ref",
  "supplier",
  "author",
  "publisher",
  "group",
  "name",
  "version",
  "description",
  "scope",
  "hashes",
  "licenses",
  "copyright",
  "cpe",
  "purl",
  "swid",
  "modified",
  "pedigree",
  "externalReferences",
  "components",
  "evidence",
  "releaseNotes",
  "modelCard",
  "data",
  "properties",
  "signature",
];
const COMPONENT_TYPES = [
  "application",
  "framework",
  "library",
  "container",
  "platform",
  "operating-system",
  "device",
  "device-driver",
  "firmware",
  "file",
  "machine-learning-model",
  "data",
];
const HASH_ALGS = [
  "MD5",
  "SHA-1",
  "SHA-256",
  "SHA-384",
  "SHA-512",
  "SHA3-256",
  "SHA3-384",
  "SHA3-512",
  "BLAKE2b-256",
  "BLAKE2b-384",
  "BLAKE2b-512",
  "BLAKE3",
];
const HASH_CONTENT = /^([a-fA-F0-9]{32}|[a-fA-F0-9]{40}|[a-fA-F0-9]{64}|[a-fA-F0-9]{96}|[a-fA-F0-9]{128})$/;
const SERIAL = /^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
/** RFC 3339 date-time, as JSON schema's "format": "date-time". */
const DATE_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;
/** purl-spec: pkg:type/namespace/name@version?qualifiers, type lower-case letters. */
const PURL = /^pkg:[a-z][a-z0-9.+-]*\/[^@?#]+(@[^?#]+)?(\?[^#]+)?(#.+)?$/;

type Json = Record<string, unknown>;
const isObject = (x: unknown): x is Json => typeof x === "object" && x !== null && !Array.isArray(x);

function closed(o: Json, allowed: string[], where: string, errors: string[]): void {
  for (const k of Object.keys(o)) if (!allowed.includes(k)) errors.push(`${where}: property '${k}' is not allowed`);
}

function strings(o: Json, keys: string[], where: string, errors: string[]): void {
  for (const k of keys) if (k in o && typeof o[k] !== "string") errors.push(`${where}.${k} must be a string`);
}

function component(c: unknown, where: string, errors: string[], refs: Set<string>): void {
  if (!isObject(c)) return void errors.push(`${where} must be an object`);
  closed(c, COMPONENT_KEYS, where, errors);
  for (const k of ["type", "name"]) if (!(k in c)) errors.push(`${where}: '${k}' is required`);
  if (!COMPONENT_TYPES.includes(c.type as string)) errors.push(`${where}.type '${c.type}' is not a component type`);
  strings(c, ["bom-ref", "name", "version", "group", "purl", "description"], where, errors);
  if (typeof c["bom-ref"] === "string") {
    if (refs.has(c["bom-ref"])) errors.push(`${where}: bom-ref ${c["bom-ref"]} is not unique`);
    refs.add(c["bom-ref"]);
  }
  if (typeof c.purl === "string" && !PURL.test(c.purl)) errors.push(`${where}.purl '${c.purl}' is not a purl`);
  for (const [i, h] of ((c.hashes as unknown[]) ?? []).entries()) {
    const w = `${where}.hashes[${i}]`;
    if (!isObject(h)) {
      errors.push(`${w} must be an object`);
      continue;
    }
    closed(h, ["alg", "content"], w, errors);
    if (!HASH_ALGS.includes(h.alg as string)) errors.push(`${w}.alg '${h.alg}' is not a hash algorithm`);
    if (typeof h.content !== "string" || !HASH_CONTENT.test(h.content))
      errors.push(`${w}.content is not hex of a hash`);
  }
  for (const [i, l] of ((c.licenses as unknown[]) ?? []).entries()) {
    const w = `${where}.licenses[${i}]`;
    if (!isObject(l)) {
      errors.push(`${w} must be an object`);
      continue;
    }
    closed(l, ["license", "expression"], w, errors);
    if (("license" in l ? 1 : 0) + ("expression" in l ? 1 : 0) !== 1)
      errors.push(`${w}: exactly one of license, expression`);
    strings(l, ["expression"], w, errors);
  }
  for (const [i, p] of ((c.properties as unknown[]) ?? []).entries()) {
    if (!isObject(p)) errors.push(`${where}.properties[${i}] must be an object`);
    else {
      closed(p, ["name", "value"], `${where}.properties[${i}]`, errors);
      strings(p, ["name", "value"], `${where}.properties[${i}]`, errors);
    }
  }
  if (c.pedigree !== undefined) {
    if (!isObject(c.pedigree)) errors.push(`${where}.pedigree must be an object`);
    else {
      closed(
        c.pedigree,
        ["ancestors", "descendants", "variants", "commits", "patches", "notes"],
        `${where}.pedigree`,
        errors,
      );
      for (const [i, a] of ((c.pedigree.ancestors as unknown[]) ?? []).entries())
        component(a, `${where}.pedigree.ancestors[${i}]`, errors, refs);
      for (const [i, p] of ((c.pedigree.patches as unknown[]) ?? []).entries())
        patch(p, `${where}.pedigree.patches[${i}]`, errors);
    }
  }
}

const PATCH_TYPES = ["unofficial", "monkey", "backport", "cherry-pick"];

/** A pedigree patch: its type is required and one of four; diff (text or url) and resolves are all it may carry. */
function patch(p: unknown, where: string, errors: string[]): void {
  if (!isObject(p)) {
    errors.push(`${where} must be an object`);
    return;
  }
  closed(p, ["type", "diff", "resolves"], where, errors);
  if (!PATCH_TYPES.includes(String(p.type))) errors.push(`${where}.type '${p.type}' is not one of ${PATCH_TYPES}`);
  if (p.diff !== undefined) {
    if (!isObject(p.diff)) errors.push(`${where}.diff must be an object`);
    else {
      closed(p.diff, ["text", "url"], `${where}.diff`, errors);
      if (p.diff.url !== undefined && typeof p.diff.url !== "string") errors.push(`${where}.diff.url must be a string`);
    }
  }
}

export function cycloneDxErrors(bom: unknown): string[] {
  const errors: string[] = [];
  if (!isObject(bom)) return ["the BOM must be a JSON object"];
  closed(bom, TOP_KEYS, "bom", errors);
  for (const k of ["bomFormat", "specVersion", "version"]) if (!(k in bom)) errors.push(`bom: '${k}' is required`);
  if (bom.bomFormat !== "CycloneDX") errors.push(`bom.bomFormat must be "CycloneDX"`);
  if (bom.specVersion !== "1.5") errors.push(`bom.specVersion must be "1.5" for this schema`);
  if (!Number.isInteger(bom.version)) errors.push("bom.version must be an integer");
  if ("serialNumber" in bom && !SERIAL.test(String(bom.serialNumber)))
    errors.push("bom.serialNumber is not a urn:uuid");
  const refs = new Set<string>();
  if ("metadata" in bom) {
    const m = bom.metadata;
    if (!isObject(m)) errors.push("bom.metadata must be an object");
    else {
      closed(m, METADATA_KEYS, "metadata", errors);
      if ("timestamp" in m && !(typeof m.timestamp === "string" && DATE_TIME.test(m.timestamp)))
        errors.push("metadata.timestamp is not a date-time");
      if ("tools" in m) {
        const t = m.tools;
        if (isObject(t)) {
          closed(t, ["components", "services"], "metadata.tools", errors);
          for (const [i, c] of ((t.components as unknown[]) ?? []).entries())
            component(c, `metadata.tools.components[${i}]`, errors, refs);
        } else if (!Array.isArray(t)) errors.push("metadata.tools must be an object or an array");
      }
      if ("component" in m) component(m.component, "metadata.component", errors, refs);
    }
  }
  if ("components" in bom) {
    if (!Array.isArray(bom.components)) errors.push("bom.components must be an array");
    else {
      const seen = new Set<string>();
      for (const [i, c] of bom.components.entries()) {
        component(c, `components[${i}]`, errors, refs);
        const text = JSON.stringify(c);
        if (seen.has(text)) errors.push(`components[${i}] repeats another (uniqueItems)`);
        seen.add(text);
      }
    }
  }
  return errors;
}
