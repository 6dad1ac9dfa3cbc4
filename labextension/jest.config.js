/**
 * Jest runs the pure TypeScript models (tags, colours, layout, analysis scheduling) under Node;
 * no browser. @jupyter/ydoc (the notebook's real shared model) ships ES modules only, so ts-jest
 * compiles it (and lib0, which it imports from source) to CommonJS too.
 */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  transform: {
    '^.+\\.tsx?$': ['ts-jest', { tsconfig: 'tsconfig.test.json' }],
    '^.+\\.js$': ['ts-jest', { tsconfig: 'tsconfig.test.json' }]
  },
  transformIgnorePatterns: ['/node_modules/(?!(@jupyter/ydoc)/)'],
  testRegex: '.*\\.spec\\.ts$'
};
