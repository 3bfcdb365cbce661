// A second-language client of mollify.v1: loads the .proto at run time (no generated code),
// calls Explain on one 8x8 digit and prints the first explanation as JSON.
// Usage: node node_explain_client.js HOST:PORT PROTO_ROOT
"use strict";
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const [address, protoRoot] = process.argv.slice(2);
const definition = protoLoader.loadSync("protos/mollify/v1/explainer.proto", {
  includeDirs: [protoRoot], keepCase: true, longs: String, enums: String, defaults: true, oneofs: true,
});
const mollify = grpc.loadPackageDefinition(definition).mollify.v1;
const client = new mollify.ExplainerService(address, grpc.credentials.createInsecure());

// Row-major (1, 1, 8, 8) input: pixel (r, c) = ((r * 8 + c) % 17) / 16, little-endian float32.
const pixels = new Float32Array(64).map((_, i) => (i % 17) / 16);
const raw = Buffer.alloc(pixels.length * 4);
pixels.forEach((v, i) => raw.writeFloatLE(v, i * 4));

const request = {
  model_name: "digits_cnn",
  inputs: { datatype: "DATA_TYPE_FP32", shape: [1, 1, 8, 8], raw_contents: raw },
  target: { predicted: {} },
  method: { mode: "SMOOTHING_MODE_INPUT", samples: 8, kernel: "gaussian" },
  seed: "42",
};

client.Explain(request, { deadline: Date.now() + 30000 }, (error, response) => {
  if (error) {
    console.log(JSON.stringify({ error: error.code, details: error.details }));
    process.exit(1);
  }
  const e = response.explanations[0];
  const bytes = e.attribution.raw_contents;
  const attribution = [];
  for (let i = 0; i < bytes.length; i += 4) attribution.push(bytes.readFloatLE(i));
  console.log(JSON.stringify({
    target_index: Number(e.target_index), samples: Number(e.samples), seed: e.seed,
    shape: e.attribution.shape.map(Number), provider: e.execution_provider, attribution,
  }));
  client.close();
});
