// A second-language client of mollify.v1: loads the .proto at run time (no generated code),
// calls Explain on one 8x8 digit and prints the first explanation as JSON; or, given MODEL IDS MASK
// (JSON arrays of rows), explains a text model: int64 token ids in `inputs` and the attention mask
// in `extra_inputs`, and prints every explanation.
// Usage: node node_explain_client.js HOST:PORT PROTO_ROOT [MODEL IDS_JSON MASK_JSON]
"use strict";
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const [address, protoRoot, textModel, idsJson, maskJson] = process.argv.slice(2);
const definition = protoLoader.loadSync("protos/mollify/v1/explainer.proto", {
  includeDirs: [protoRoot], keepCase: true, longs: String, enums: String, defaults: true, oneofs: true,
});
const mollify = grpc.loadPackageDefinition(definition).mollify.v1;
const client = new mollify.ExplainerService(address, grpc.credentials.createInsecure());

// Row-major int64 rows, little-endian, as a mollify.v1 Tensor.
function int64Tensor(rows) {
  const flat = rows.flat();
  const raw = Buffer.alloc(flat.length * 8);
  flat.forEach((v, i) => raw.writeBigInt64LE(BigInt(v), i * 8));
  return { datatype: "DATA_TYPE_INT64", shape: [rows.length, rows[0].length], raw_contents: raw };
}

function digitsRequest() {
  // Row-major (1, 1, 8, 8) input: pixel (r, c) = ((r * 8 + c) % 17) / 16, little-endian float32.
  const pixels = new Float32Array(64).map((_, i) => (i % 17) / 16);
  const raw = Buffer.alloc(pixels.length * 4);
  pixels.forEach((v, i) => raw.writeFloatLE(v, i * 4));
  return {
    model_name: "digits_cnn",
    inputs: { datatype: "DATA_TYPE_FP32", shape: [1, 1, 8, 8], raw_contents: raw },
    target: { predicted: {} },
    method: { mode: "SMOOTHING_MODE_INPUT", samples: 8, kernel: "gaussian" },
    seed: "42",
  };
}

function textRequest() {
  return {
    model_name: textModel,
    inputs: int64Tensor(JSON.parse(idsJson)),
    extra_inputs: { attention_mask: int64Tensor(JSON.parse(maskJson)) },
    target: { class_index: "1" },
    method: { mode: "SMOOTHING_MODE_INPUT", samples: 8, kernel: "gaussian" },
    seed: "42",
  };
}

function describe(e) {
  const bytes = e.attribution.raw_contents;
  const attribution = [];
  for (let i = 0; i < bytes.length; i += 4) attribution.push(bytes.readFloatLE(i));
  return {
    target_index: Number(e.target_index), samples: Number(e.samples), seed: e.seed,
    shape: e.attribution.shape.map(Number), provider: e.execution_provider, attribution,
  };
}

const request = textModel ? textRequest() : digitsRequest();

client.Explain(request, { deadline: Date.now() + 30000 }, (error, response) => {
  if (error) {
    console.log(JSON.stringify({ error: error.code, details: error.details }));
    process.exit(1);
  }
  const explanations = response.explanations.map(describe);
  console.log(JSON.stringify(textModel ? { explanations } : explanations[0]));
  client.close();
});
